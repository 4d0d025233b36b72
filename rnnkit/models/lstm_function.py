"""The LSTM's forward and backward pass through time as one ``torch.autograd.Function``.

``rnnkit.models.lstm.lstm_cell`` in a Python loop is the readable reference: autograd records about
ten nodes per step and replays them backwards. The functions here compute the same thing with a
hand-derived backward pass, so that a training step costs little more than its matrix products.
Two entry points share the loops:

- ``lstm_sequence(x_proj, W_hh, state)`` (``LSTMFunction``): from the input projection
  x_proj = W_ih x + b computed outside (``charlstm``'s scratch backend);
- ``lstm_layer(x, W_ih, b, W_hh, state)`` (``LSTMLayerFunction``): from the inputs themselves. Each
  step's one product takes [h_{t-1}, x_t, 1] against [W_hh^T; W_ih^T; b], and after the loop one
  product gives the gradients of all three weights: no (T, batch, 4h) input projection to allocate,
  write and read, no separate products for dW_ih and the bias gradient (the ``lstm`` model).

Forward (gate order i, f, g, o as in torch.nn.LSTM; a_t the pre-activations, x_t = x_proj[t]):

    a_t = x_t + h_{t-1} W_hh^T                                  (batch, 4h)
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)      g = tanh(a_g)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward. Write dX for dL/dX; dh_t is the whole gradient reaching h_t (from the outputs at step t and
through a_{t+1}), dc_t the whole gradient reaching c_t (through h_t and through c_{t+1}), and
tc_t = tanh(c_t). From h_t = o tc_t and c_t = f c_{t-1} + i g:

    do_t  = dh_t * tc_t
    dc_t  = dc_t(through c_{t+1}) + dh_t * o * (1 - tc_t^2)
    di_t  = dc_t * g        df_t = dc_t * c_{t-1}        dg_t = dc_t * i
    dc_{t-1}(through c_t) = dc_t * f

Through the nonlinearities, sigmoid'(a) = s (1 - s) and tanh'(a) = 1 - g^2, the gradients of the
pre-activations are (gate by gate, each (batch, h)):

    da_i = di_t * i (1 - i)      da_f = df_t * f (1 - f)      da_g = dg_t * (1 - g^2)      da_o = do_t * o (1 - o)

and, as a_t = x_t + h_{t-1} W_hh^T, with da_t = [da_i, da_f, da_g, da_o] (batch, 4h):

    dx_t     = da_t                                     (the input projection enters with coefficient 1)
    dh_{t-1} = dh_{t-1}(from the outputs) + da_t W_hh   (batch, 4h) (4h, h)
    dW_hh    = sum_t da_t^T h_{t-1}

The loop runs t = T..1 with dh_T = dL/dh_T(outputs) + dL/d(last h), dc_T = dL/d(last c); after it,
dh0 = dh_0 and dc0 = dc_0 (the gradients that reached the initial state). The weight gradients are
one product after the loop, not T small ones: the da_t are written into one (T, batch, 4h) buffer DA
and the left operands z_t of the steps' products are rows of one (T+1, batch, width) buffer Z, so
Z[:-1]^T DA over all T*batch rows at once is dW_hh^T (``lstm_layer``: [dW_hh^T; dW_ih^T; db]).
With the inputs inside (``lstm_layer``), dx = DA W_ih is one product as well. Without an initial
state (h0 = c0 = 0) the first step's product and its rows in the weight product leave h0 out.

How it is computed (a few in-place operations per step, in buffers the function owns):

- Powers of two scale exactly in floating point, so the loops keep 2a_g, 2g and 2c in place of a_g,
  g and c, which turns both tanh into one sigmoid each (torch's CPU tanh costs several times its
  sigmoid): tanh(a) = 2 sigmoid(2a) - 1. The g columns of the step's weight are doubled once per call
  (for x_proj, a_g is doubled after the product), so one in-place sigmoid over the 4h-wide block gives
  i, f, s_g = sigmoid(2 a_g) and o, kept in S for backward; 2g = 4 s_g - 2 (one step's buffer G;
  backward computes it again from s_g), 2c_t = f 2c_{t-1} + i 2g (kept in C), and
  tanh(c_t) = 2 sigmoid(2c_t) - 1 (kept in TC). Results equal the unscaled recurrence's bit for bit.
- Backward carries dc2 = dL/d(2c) = dc / 2. Then di = dc2 2g, df = dc2 2c_{t-1} and, as 2g = 4 s_g - 2
  with s_g = sigmoid(2 a_g), da_g = 8 dc2 i s_g (1 - s_g): the multipliers M = [dc2 2g, dc2 2c_{t-1},
  8 dc2 i, dh tc] of the four gates' s (1 - s) come from one product each, and da_t = s (1 - s) M is
  one operation over the 4h block (aten's ``sigmoid_backward``).
- dh o (1 - tc^2) = o (dh - (dh tc) tc): the term reuses dh tc of M and tc, still in cache.
- Kept for backward (only 2g is recomputed: one operation a step, less memory to write and read
  back): S (T, batch, 4h), Z (T+1, batch, width; h0 first), C (T+1, batch, h; 2c0 first) and TC
  (T, batch, h). Backward writes da_t over s_t once it has read it, so DA is S: no second
  (T, batch, 4h) buffer to fill and read back (for ``lstm_sequence`` the gradient of x_proj is that
  buffer). A second backward through the same graph (``retain_graph``) finds the gates overwritten
  and runs the forward loop again from the inputs, which are saved for that (so x_proj stays alive
  until backward). Without gradients (``keep=False``, inference) the gate and cell buffers are one
  step's, reused.
- Layout: time-major. Z[t] = [h_t | x_{t+1} | 1] (width h + input + 1) for ``lstm_layer``, Z[t] = h_t
  (width h) for ``lstm_sequence``; a step's slices are contiguous (batch, 4h) and (batch, width)
  blocks, and S, Z[:-1] are contiguous matrices. The hidden states come back as views (T, batch, h)
  of Z: contiguous for ``lstm_sequence``, every width-th row for ``lstm_layer``.
- Every buffer of a call comes from one block (``_Workspace``), on the CPU taken from a small pool of
  blocks that nothing refers to any more: fresh memory costs a page fault per 4 KiB when first written,
  and the C allocator often returns large freed blocks to the system, so without the pool a training
  step faulted its buffers in again and again (measured: up to thousands of faults, 10-20 % of a
  palindrome step). A pooled block is a ``bytearray`` that tensors are made on (``torch.frombuffer``
  on a memoryview of it), so a weak reference to that memoryview tells when no tensor, view or
  gradient on the block is alive any more (no private torch API).

Precision: the recurrence runs in one compute dtype. Without autocast that is the promoted dtype of the
inputs (float32, float64, or bfloat16 for a bfloat16 model). Under autocast on the inputs' device type
(CPU or CUDA) with float32 inputs it is autocast's dtype (bfloat16 on CPU by default, float16 on
CUDA), as torch.nn.LSTM runs in autocast's dtype; autocast itself is switched off inside, the inputs
are cast once, and each gradient is returned in its input's dtype. The code is device-agnostic (no
CPU-only call), so CUDA tensors run the same path. Double backward is not supported
(``once_differentiable``); a second backward through a retained graph works.

``torch.compile`` of the per-step elementwise work was tried and left out: 30 s to compile one shape,
and a compiled call cost more than the eager in-place operations it replaced (docs/palindromes.md).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from rnnkit.errors import UsageError

__all__ = ["LSTMFunction", "LSTMLayerFunction", "lstm_layer", "lstm_sequence"]

#: da = grad * s (1 - s) in one pass (what autograd runs for torch.sigmoid's backward).
_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype the recurrence runs in: the inputs' promoted dtype, or autocast's for float32 inputs."""
    present = [t for t in tensors if t is not None]
    dtype = present[0].dtype
    for t in present[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device_type = present[0].device.type
    if dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def _constants(like: torch.Tensor, *values: float) -> tuple[torch.Tensor, ...]:
    """0-dim tensors of ``like``'s dtype and device: an op costs less with one than with a Python float."""
    return tuple(torch.full((), v, dtype=like.dtype, device=like.device) for v in values)


#: Blocks kept for reuse by later calls (CPU only: CUDA's caching allocator does this already), oldest
#: first. A block is free when no tensor made on it is alive any more (``_PoolBlock.free``). A request no
#: free block fits forgets the free ones (of other sizes: shapes changed), and the list holds at most
#: ``_POOL_BYTES``, so what stays allocated beyond what is in use is the buffers of the current shapes.
_pool: list[_PoolBlock] = []
_POOL_BYTES = 256 * 2**20
_ALIGN = 64  # bytes: a cache line, as torch's own CPU allocations
_pool_lock = threading.Lock()


class _PoolBlock:
    """Memory for tensors that can tell when none of them is alive: a ``bytearray``, handed out as a
    tensor made with ``torch.frombuffer`` on a fresh ``memoryview`` of it. The storage of that tensor
    (and of every view or tensor ``set_`` on it) holds the memoryview, so a weak reference to the
    memoryview dies exactly when the last of them does."""

    __slots__ = ("data", "user")

    def __init__(self, nbytes: int) -> None:
        self.data = bytearray(nbytes)
        self.user: weakref.ref[memoryview] | None = None

    def free(self) -> bool:
        return self.user is None or self.user() is None

    def claim(self, like: torch.Tensor, numel: int) -> torch.Tensor:
        """A flat tensor of ``numel`` elements of ``like``'s dtype on this block, aligned to ``_ALIGN``."""
        view = memoryview(self.data)
        self.user = weakref.ref(view)
        raw = torch.frombuffer(view, dtype=torch.uint8)
        start = -raw.data_ptr() % _ALIGN
        return raw[start : start + numel * like.element_size()].view(like.dtype)


def _block(like: torch.Tensor, numel: int) -> torch.Tensor:
    """A flat tensor of ``numel`` elements of ``like``'s dtype and device: on a free pooled block of that
    size (CPU) or a new one. Fresh memory costs a page fault per 4 KiB when first written (measured:
    thousands per palindrome training step, 10-20 % of its time), and the C allocator often hands large
    blocks back to the system when they are freed, so each step would fault its buffers in again."""
    nbytes = numel * like.element_size() + _ALIGN
    if like.device.type != "cpu" or nbytes > _POOL_BYTES:
        return like.new_empty(numel)
    with _pool_lock:  # a block is claimed (referred to by the returned tensor) before the lock is let go
        for block in _pool:
            if len(block.data) == nbytes and block.free():
                _pool.remove(block)
                _pool.append(block)  # the most recently used last
                return block.claim(like, numel)
        _pool[:] = [block for block in _pool if not block.free()]
        block = _PoolBlock(nbytes)
        _pool.append(block)
        while sum(len(b.data) for b in _pool) > _POOL_BYTES:
            _pool.pop(0)  # forgotten, not freed: whoever still uses it keeps it alive
        return block.claim(like, numel)


class _Workspace:
    """The buffers of one forward pass, carved out of one block (``_block``), with per-step views.

    Each buffer is its own tensor on a disjoint part of the block (``set_``), not a view of it, so each
    keeps its own version counter. With ``keep`` (a backward pass will follow) every step has its own
    slices; without it (inference) the gate and cell buffers are one step's, reused, and only Z (which
    holds the hidden states) is kept for every step. ``width`` is Z's row: h, or h + input (+ 1 for
    the bias).
    """

    def __init__(self, like: torch.Tensor, steps: int, batch: int, hidden: int, width: int, keep: bool) -> None:
        gates = 4 * hidden
        n_s = steps if keep else 1  # steps with their own gate buffers
        shapes = {
            "Z": (steps + 1, batch, width),  # [h_t | x_{t+1} | 1]: the left operand of step t+1's product
            "S": (n_s, batch, gates),  # 2 a_g for a_g, then i, f, s_g = sigmoid(2 a_g), o; backward: da_t
            "G": (1, batch, hidden),  # 2g = 2 tanh(a_g) = 4 s_g - 2 of the current step (backward recomputes it)
            "TC": (n_s, batch, hidden),  # tanh(c_t)
            "C": (steps + 1 if keep else 2, batch, hidden),  # 2c0, 2c_1 .. 2c_T, or two alternating slots
        }
        block = _block(like, sum(math.prod(shape) for shape in shapes.values()))  # claims the storage
        storage, base = block.untyped_storage(), block.storage_offset()
        buffers, offset = [], base
        for shape in shapes.values():
            buffers.append(like.new_empty(0).set_(storage, offset, shape))
            offset += math.prod(shape)
        self.Z, self.S, self.G, self.TC, self.C = buffers
        self.zs = self.Z.unbind(0)
        self.hs = self.Z[:, :, :hidden].unbind(0)  # h0 .. h_T, each (batch, h)
        if keep:
            self.ss, self.tcs = self.S.unbind(0), self.TC.unbind(0)
            self.cs = self.C.unbind(0)
            self.gate_steps = [gate.unbind(0) for gate in self.S.view(steps, batch, 4, hidden).unbind(2)]
        else:
            self.ss, self.tcs = [self.S[0]] * steps, [self.TC[0]] * steps
            self.cs = [self.C[t % 2] for t in range(steps + 1)]
            self.gate_steps = [[gate] * steps for gate in self.S[0].chunk(4, 1)]


def _forward_steps(
    ws: _Workspace, steps: int, W: torch.Tensor, xs: Sequence[torch.Tensor] | None, zero_h0: bool
) -> None:
    """The recurrence, into the workspace. ``xs`` None: z_t W (batch, width) (width, 4h) with the g
    columns of W doubled; else per-step x_proj slices (batch, 4h) and W = W_hh^T (h, 4h) as it is.
    ``zero_h0``: h0 is zero, so the first step's product leaves out its h0 part."""
    two, minus_one, minus_two = _constants(ws.S, 2.0, -1.0, -2.0)  # 0-dim: cheaper per op than floats
    zs, hs, ss, cs, tcs, g = ws.zs, ws.hs, ws.ss, ws.cs, ws.tcs, ws.G[0]
    i_, f_, sg_, o_ = ws.gate_steps
    hidden = hs[0].shape[1]
    for t in range(steps):
        s, c, tc = ss[t], cs[t + 1], tcs[t]
        if xs is None:
            if t == 0 and zero_h0:
                torch.mm(zs[0][:, hidden:], W[hidden:], out=s)  # [x_1, 1] [W_ih^T; b]
            else:
                torch.mm(zs[t], W, out=s)  # a_t with 2 a_g, (batch, 4h)
        else:
            if t == 0 and zero_h0:
                s.copy_(xs[0])
            else:
                torch.addmm(xs[t], zs[t], W, out=s)  # a_t, (batch, 4h)
            sg_[t].mul_(two)
        s.sigmoid_()  # i, f, s_g = sigmoid(2 a_g), o: one pass over the 4h block
        torch.add(minus_two, sg_[t], alpha=4, out=g)  # 2g = 4 s_g - 2
        torch.mul(f_[t], cs[t], out=c).addcmul_(i_[t], g)  # 2c_t = f 2c_{t-1} + i 2g
        torch.sigmoid(c, out=tc)
        torch.add(minus_one, tc, alpha=2, out=tc)  # tanh(c_t) = 2 sigmoid(2 c_t) - 1
        torch.mul(o_[t], tc, out=hs[t + 1])  # h_t = o tanh(c_t)


def _run_forward(
    dtype: torch.dtype,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    W_hh: torch.Tensor,
    W_ih: torch.Tensor | None,
    bias: torch.Tensor | None,
    keep: bool,
) -> _Workspace:
    """Both entry points' forward pass in ``dtype``: x is x_proj (T, batch, 4h) when W_ih is None, else
    the inputs (T, batch, input); None for h0 or c0 is zeros. Autocast must be off."""
    steps, batch, _ = x.shape
    hidden = W_hh.shape[1]
    if W_ih is None:
        W, xs = W_hh.to(dtype).t(), x.to(dtype).unbind(0)  # W_hh^T (h, 4h), x_proj[t] (batch, 4h)
        ws = _Workspace(W, steps, batch, hidden, hidden, keep)
    else:
        # [W_hh^T; W_ih^T; b] (width, 4h), the g columns doubled (the loop keeps 2 a_g)
        parts = [W_hh.to(dtype).t(), W_ih.to(dtype).t()] + ([] if bias is None else [bias.to(dtype).unsqueeze(0)])
        W = torch.cat(parts)
        W[:, 2 * hidden : 3 * hidden].mul_(2.0)
        ws = _Workspace(W, steps, batch, hidden, W.shape[0], keep)
        inputs = x.shape[2]
        ws.Z[:steps, :, hidden : hidden + inputs].copy_(x)  # x_{t+1} beside h_t
        if bias is not None:
            ws.Z[:steps, :, hidden + inputs].fill_(1.0)
        xs = None
    if h0 is None:
        ws.hs[0].zero_()
    else:
        ws.hs[0].copy_(h0)
    if c0 is None:
        ws.cs[0].zero_()
    else:
        torch.mul(c0.to(dtype), 2.0, out=ws.cs[0])
    _forward_steps(ws, steps, W, xs, h0 is None)
    return ws


def _backward_steps(
    ws: _Workspace, W: torch.Tensor, d_out: torch.Tensor | None, dh: torch.Tensor, dc: torch.Tensor, need_h0: bool
) -> None:
    """The loop t = T..1 of the module docstring: writes da_t over s_t in S (T, batch, 4h) and leaves
    the gradients reaching the initial state in dh (batch, h) and dc (batch, h) (dL/d(2c0) there: dc
    carries dL/d(2c) throughout). W is W_hh (4h, h) in the compute dtype."""
    steps, batch, gates = ws.S.shape
    hidden = gates // 4
    M = ws.S.new_empty((batch, gates))  # what multiplies s (1 - s): dc2 2g, dc2 2c_{t-1}, 8 dc2 i, dh tanh(c_t)
    m_i, m_f, m_g, m_o = M.chunk(4, 1)  # each (batch, h)
    zero, dtc = ws.S.new_zeros((batch, hidden)), ws.S.new_empty((batch, hidden))  # dtc: dh (1 - tanh(c_t)^2)
    ss, cs, tcs = ws.ss, ws.cs, ws.tcs
    i_, f_, sg_, o_ = ws.gate_steps
    (minus_two,) = _constants(ws.S, -2.0)
    for t in range(steps - 1, -1, -1):
        s = ss[t]
        torch.mul(dh, tcs[t], out=m_o)  # dh tanh(c_t)
        # dc2 += dh o (1 - tanh(c_t)^2) / 2 = o (dh - (dh tanh(c_t)) tanh(c_t)) / 2
        torch.addcmul(dh, m_o, tcs[t], value=-1.0, out=dtc)
        dc.addcmul_(dtc, o_[t], value=0.5)
        torch.add(minus_two, sg_[t], alpha=4, out=m_i).mul_(dc)  # dc2 2g, 2g = 4 s_g - 2
        torch.mul(dc, cs[t], out=m_f)
        torch.addcmul(zero, dc, i_[t], value=8.0, out=m_g)
        dc.mul_(f_[t])  # dc2_{t-1} from step t
        _sigmoid_backward(M, s, grad_input=s)  # da_t = M s (1 - s), over s_t
        if t > 0:
            if d_out is None:
                torch.mm(s, W, out=dh)
            else:
                torch.addmm(d_out[t - 1], s, W, out=dh)
        elif need_h0:
            torch.mm(s, W, out=dh)


def _weight_product(Z: torch.Tensor, DA: torch.Tensor, hidden: int, zero_h0: bool) -> torch.Tensor:
    """Z_prev^T DA summed over all steps in one product, (width, 4h): the rows are dW_hh^T (and, for a
    wider Z, dW_ih^T and db). With ``zero_h0`` the first step's h0 rows (zeros) are left out of it."""
    steps, batch, gates = DA.shape
    width = Z.shape[2]
    if not zero_h0:
        return torch.mm(Z[:-1].view(steps * batch, width).t(), DA.view(steps * batch, gates))
    rows = (steps - 1) * batch
    dW = torch.mm(Z[1:-1].reshape(rows, width).t(), DA[1:].view(rows, gates))  # zeros for one step
    if width > hidden:
        dW[hidden:].addmm_(Z[0][:, hidden:].t(), DA[0])  # the first step's [x_1, 1]
    return dW


def _save(ctx: Any, ws: _Workspace, keep: bool, dtype: torch.dtype, inputs: tuple[torch.Tensor | None, ...]) -> None:
    """What backward needs: Z (saved: the returned hidden states are views of it, so changing them in
    place is caught), the inputs (saved, to run forward again for a second backward) and the workspace."""
    ctx.set_materialize_grads(False)
    ctx.keep, ctx.dtype, ctx.device_type = keep, dtype, ws.S.device.type
    ctx.dtypes = tuple(None if t is None else t.dtype for t in inputs)
    if keep:
        ctx.save_for_backward(ws.Z, *inputs)
        ctx.ws = ws  # the gates are overwritten by the first backward: not saved (they change)


def _backward(
    ctx: Any, d_out: torch.Tensor | None, d_hT: torch.Tensor | None, d_cT: torch.Tensor | None
) -> tuple[_Workspace, torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
    """Both entry points' backward loop: the workspace with da_t in S, dh0 and dc0 (batch, h), and the
    saved inputs (x, h0, c0, W_hh, W_ih, bias)."""
    if not ctx.keep:
        raise UsageError("LSTMFunction.apply(..., keep=False) saves nothing to differentiate: pass keep=True")
    _, *inputs = ctx.saved_tensors
    x, h0, c0, W_hh, W_ih, bias = inputs
    dtype = ctx.dtype
    if ctx.ws is None:  # a second backward through the graph: the first wrote da_t over the gates
        ws = _run_forward(dtype, x, h0, c0, W_hh, W_ih, bias, keep=True)
    else:
        ws, ctx.ws = ctx.ws, None
    steps, batch, gates = ws.S.shape
    dh = ws.S.new_zeros((batch, gates // 4)) if d_hT is None else d_hT.to(dtype, copy=True)  # (batch, h)
    dc = ws.S.new_zeros((batch, gates // 4)) if d_cT is None else d_cT.to(dtype) * 0.5  # dL/d(2c_T)
    if d_out is not None:
        dh.add_(d_out[steps - 1])
    _backward_steps(ws, W_hh.to(dtype), d_out, dh, dc, ctx.needs_input_grad[1])
    return ws, dh, dc * 2.0, tuple(inputs)


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer over all time steps: ``apply(x_proj, h0, c0, W_hh, keep=True) -> (hs, h_T, c_T)``.

    Shapes: x_proj (T, batch, 4h) time-major, input projection and bias included; h0, c0 (batch, h),
    or None for zeros; W_hh (4h, h). Returns hs (T, batch, h), the hidden state of every step, and the
    last h_T and c_T (batch, h); hs and h_T are views of a buffer saved for backward (changing them in
    place is an error). ``keep=False`` (inference: ``lstm_sequence`` passes it when no gradient is
    wanted) saves nothing and reuses one step's gate buffers. The gradient is derived in the module
    docstring; the one for x_proj is the (T, batch, 4h) buffer the gates were kept in.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x_proj: torch.Tensor,
        h0: torch.Tensor | None,
        c0: torch.Tensor | None,
        W_hh: torch.Tensor,
        keep: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = _compute_dtype(x_proj, h0, c0, W_hh)
        with torch.autocast(x_proj.device.type, enabled=False):
            ws = _run_forward(dtype, x_proj, h0, c0, W_hh, None, None, keep)
            steps = x_proj.shape[0]
            c_last = ws.cs[steps] * 0.5  # (batch, h)
        _save(ctx, ws, keep, dtype, (x_proj, h0, c0, W_hh, None, None))
        return ws.Z[1:], ws.hs[steps], c_last

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, d_out: torch.Tensor | None, d_hT: torch.Tensor | None, d_cT: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        need_x, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        with torch.no_grad(), torch.autocast(ctx.device_type, enabled=False):
            ws, dh0, dc0, (_, h0, *_) = _backward(ctx, d_out, d_hT, d_cT)
            # dW_hh = DA^T H_prev, (4h, h), computed as (H_prev^T DA)^T, which MKL runs a few per cent
            # faster than the transposed-A form.
            dW = _weight_product(ws.Z, ws.S, ws.S.shape[2] // 4, h0 is None).t() if need_w else None
        x_dtype, h_dtype, c_dtype, w_dtype = ctx.dtypes[:4]
        return (
            ws.S.to(x_dtype) if need_x else None,
            dh0.to(h_dtype) if need_h0 else None,
            dc0.to(c_dtype) if need_c0 else None,
            dW.to(w_dtype) if dW is not None else None,
        ) + (None,) * (len(ctx.needs_input_grad) - 4)  # keep, where it was passed


class LSTMLayerFunction(torch.autograd.Function):
    """One LSTM layer from its inputs: ``apply(x, h0, c0, W_hh, W_ih, bias, keep=True) -> (hs, h_T, c_T)``.

    Shapes: x (T, batch, input) time-major (any strides); h0, c0 (batch, h) or None for zeros; W_hh
    (4h, h); W_ih (4h, input); bias (4h,) or None. Returns what ``LSTMFunction`` returns; hs and h_T
    are views of the saved Z (every width-th row). Each step's product is [h_{t-1}, x_t, 1]
    [W_hh^T; W_ih^T; b], and one product after the backward loop gives all three weight gradients.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: torch.Tensor,
        h0: torch.Tensor | None,
        c0: torch.Tensor | None,
        W_hh: torch.Tensor,
        W_ih: torch.Tensor,
        bias: torch.Tensor | None,
        keep: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = _compute_dtype(x, h0, c0, W_hh, W_ih, bias)
        with torch.autocast(x.device.type, enabled=False):
            ws = _run_forward(dtype, x, h0, c0, W_hh, W_ih, bias, keep)
            steps, hidden = x.shape[0], W_hh.shape[1]
            c_last = ws.cs[steps] * 0.5  # (batch, h)
        _save(ctx, ws, keep, dtype, (x, h0, c0, W_hh, W_ih, bias))
        return ws.Z[1:, :, :hidden], ws.hs[steps], c_last

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, d_out: torch.Tensor | None, d_hT: torch.Tensor | None, d_cT: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        need_x, need_h0, need_c0, need_hh, need_ih, need_b = ctx.needs_input_grad[:6]
        with torch.no_grad(), torch.autocast(ctx.device_type, enabled=False):
            ws, dh0, dc0, (_, h0, _, _, W_ih, _) = _backward(ctx, d_out, d_hT, d_cT)
            steps, batch, gates = ws.S.shape
            hidden, inputs = gates // 4, W_ih.shape[1]
            # [dW_hh^T; dW_ih^T; db], (width, 4h)
            dW = _weight_product(ws.Z, ws.S, hidden, h0 is None) if need_hh or need_ih or need_b else None
            dx = None
            if need_x:  # dx = DA W_ih, (T, batch, input)
                dx = torch.mm(ws.S.view(steps * batch, gates), W_ih.to(ctx.dtype)).view(steps, batch, inputs)
        x_dtype, h_dtype, c_dtype, hh_dtype, ih_dtype, b_dtype = ctx.dtypes
        return (
            dx.to(x_dtype) if dx is not None else None,
            dh0.to(h_dtype) if need_h0 else None,
            dc0.to(c_dtype) if need_c0 else None,
            dW[:hidden].t().to(hh_dtype) if dW is not None and need_hh else None,
            dW[hidden : hidden + inputs].t().to(ih_dtype) if dW is not None and need_ih else None,
            dW[hidden + inputs].to(b_dtype) if dW is not None and need_b else None,
        ) + (None,) * (len(ctx.needs_input_grad) - 6)  # keep, where it was passed


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lstm_sequence(
    x_proj: torch.Tensor,
    W_hh: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run one LSTM layer over x_proj (T, batch, 4h) from ``state`` (h0, c0), each (batch, h), or zeros.

    Returns the hidden states (T, batch, h) and the last (h, c), each (batch, h); differentiable in
    x_proj, W_hh (4h, h) and the initial state through ``LSTMFunction``.
    """
    shapes_fit = x_proj.dim() == 3 and W_hh.dim() == 2 and x_proj.shape[2] == W_hh.shape[0] == 4 * W_hh.shape[1]
    if not shapes_fit or x_proj.shape[0] == 0:
        raise UsageError(
            f"lstm_sequence needs x_proj (T, batch, 4h) with T >= 1 and W_hh (4h, h), got {tuple(x_proj.shape)} "
            f"and {tuple(W_hh.shape)}"
        )
    h0, c0 = (None, None) if state is None else state  # None: zeros, and the first step skips h0's product
    keep = _wants_grad(x_proj, h0, c0, W_hh)
    hs, h, c = LSTMFunction.apply(x_proj, h0, c0, W_hh, keep)
    return hs, (h, c)


def lstm_layer(
    x: torch.Tensor,
    W_ih: torch.Tensor,
    bias: torch.Tensor | None,
    W_hh: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run one LSTM layer over x (T, batch, input), time-major, from ``state`` (h0, c0) or zeros.

    W_ih (4h, input), bias (4h,) or None, W_hh (4h, h). Returns the hidden states (T, batch, h; a
    strided view) and the last (h, c), each (batch, h); differentiable in x, all weights and the
    initial state through ``LSTMLayerFunction``. Faster than ``lstm_sequence`` after an input
    projection of one's own: the projection and its gradients join the per-step products.
    """
    hidden = W_hh.shape[-1]
    shapes_fit = (
        x.dim() == 3
        and W_hh.dim() == 2
        and W_hh.shape[0] == 4 * hidden
        and W_ih.shape == (4 * hidden, x.shape[-1])
        and (bias is None or bias.shape == (4 * hidden,))
    )
    if not shapes_fit or x.shape[0] == 0:
        raise UsageError(
            "lstm_layer needs x (T, batch, input) with T >= 1, W_ih (4h, input), bias (4h,) and W_hh (4h, h), got "
            f"{tuple(x.shape)}, {tuple(W_ih.shape)}, {None if bias is None else tuple(bias.shape)} and "
            f"{tuple(W_hh.shape)}"
        )
    h0, c0 = (None, None) if state is None else state  # None: zeros, and the first step skips h0's product
    keep = _wants_grad(x, h0, c0, W_hh, W_ih, bias)
    hs, h, c = LSTMLayerFunction.apply(x, h0, c0, W_hh, W_ih, bias, keep)
    return hs, (h, c)
