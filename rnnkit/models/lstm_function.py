"""The LSTM's forward and backward pass through time as one ``torch.autograd.Function``.

``rnnkit.models.lstm.lstm_cell`` in a Python loop is the readable reference: autograd records about
ten nodes per step and replays them backwards. ``LSTMFunction`` computes the same function with a
hand-derived backward pass, so that a training step costs little more than its matrix products.

Forward (gate order i, f, g, o as in torch.nn.LSTM; a_t the pre-activations, x_t = x_proj[t] the input
projection W_ih x_t + b, computed outside by one ``addmm`` so that autograd handles W_ih and the bias):

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
dh0 = dh_0 and dc0 = dc_0 (the gradients that reached the initial state). dW_hh is one product after
the loop, not T small ones: the da_t are written into one (T, batch, 4h) buffer DA, the h_{t-1} are
the saved (T+1, batch, h) hidden states H without the last, so dW_hh = DA^T H[:-1] is a single
(4h x T*batch) (T*batch x h) matrix product; DA itself is the returned dx_proj.

How it is computed (each a few in-place operations per step, in buffers the function owns):

- The g gate uses tanh(a) = 2 sigmoid(2a) - 1: its pre-activation is doubled (exactly) so that one
  in-place sigmoid over the 4h-wide block gives i, f, s_g = sigmoid(2 a_g) and o; the buffer S keeps
  those sigmoid outputs for backward, and g = 2 s_g - 1. tanh(c_t) = 2 sigmoid(2 c_t) - 1 as well
  (torch's CPU tanh costs several times its sigmoid). 1 - g^2 = 4 s_g (1 - s_g), so the four gates'
  derivatives are the one expression s (1 - s) over the 4h block times a multiplier per gate,
  M = [dc_t g, dc_t c_{t-1}, 4 dc_t i, dh_t tc_t]: da_t = s (1 - s) M (two operations on the block).
- dh_t o (1 - tc_t^2) = dh_t o - (dh_t tc_t) h_t, as h_t = o tc_t: the term reuses dh_t tc_t of M and
  the saved h_t instead of computing 1 - tc_t^2.
- Saved for backward (nothing is recomputed but g): S (T, batch, 4h), H (T+1, batch, h; h0 first),
  C (T+1, batch, h; c0 first) and tanh(C) (T, batch, h). Without gradients (``keep=False``, inference)
  the gate and cell buffers are one step's, reused.
- Layout: time-major. x_proj is (T, batch, 4h) and the hidden states come back as (T, batch, h), so a
  step's slices are contiguous (batch, 4h) and (batch, h) blocks and DA, H are contiguous matrices.
- Every buffer of a call comes from one block (``_Workspace``), on the CPU taken from a small pool of
  blocks that nothing refers to any more: fresh memory costs a page fault per 4 KiB when first written,
  and the C allocator often returns large freed blocks to the system, so without the pool a training
  step faulted its buffers in again and again (measured: up to thousands of faults, 10-20 % of a
  palindrome step).

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
from typing import Any

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from rnnkit.errors import UsageError

__all__ = ["LSTMFunction", "lstm_sequence"]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the recurrence runs in: the inputs' promoted dtype, or autocast's for float32 inputs."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device_type = tensors[0].device.type
    if dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def _constants(like: torch.Tensor, *values: float) -> tuple[torch.Tensor, ...]:
    """0-dim tensors of ``like``'s dtype and device: an op costs less with one than with a Python float."""
    return tuple(torch.full((), v, dtype=like.dtype, device=like.device) for v in values)


#: Storages kept for reuse by later calls (CPU only: CUDA's caching allocator does this already), oldest
#: first. A storage is reused only when nothing but this list refers to it (no saved tensor, output,
#: gradient or view of it is alive): its use count is 1. A request no free storage fits forgets the free
#: ones (of other sizes: shapes changed), and the list holds at most ``_POOL_BYTES``, so what stays
#: allocated beyond what is in use is the buffers of the current shapes, at most 256 MiB.
_pool: list[torch.UntypedStorage] = []
_POOL_BYTES = 256 * 2**20
_pool_lock = threading.Lock()
_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; without it nothing is pooled


def _block(like: torch.Tensor, numel: int) -> torch.Tensor:
    """A flat tensor of ``numel`` elements of ``like``'s dtype and device: on a free pooled storage of that
    size (CPU) or a new one. Fresh memory costs a page fault per 4 KiB when first written (measured:
    thousands per palindrome training step, 10-20 % of its time), and the C allocator often hands large
    blocks back to the system when they are freed, so each step would fault its buffers in again."""
    nbytes = numel * like.element_size()
    if like.device.type != "cpu" or _use_count is None or nbytes > _POOL_BYTES:
        return like.new_empty(numel)
    with _pool_lock:  # a storage is claimed (referred to by the returned tensor) before the lock is let go
        for storage in _pool:
            if storage.nbytes() == nbytes and _use_count(storage._cdata) == 1:
                _pool.remove(storage)
                _pool.append(storage)  # the most recently used last
                return like.new_empty(0).set_(storage, 0, (numel,))
        _pool[:] = [storage for storage in _pool if _use_count(storage._cdata) > 1]
        block = like.new_empty(numel)
        _pool.append(block.untyped_storage())
        while sum(s.nbytes() for s in _pool) > _POOL_BYTES:
            _pool.pop(0)  # forgotten, not freed: whoever still uses it keeps it alive
        return block


class _Workspace:
    """The buffers of one forward pass, carved out of one block (``_block``), with per-step views.

    Each buffer is its own tensor on a disjoint part of the block (``set_``), not a view of it, so each
    keeps its own version counter: writing the gradients into DA during backward does not count as
    modifying the saved buffers or the returned hidden states. With ``keep`` (a backward pass will
    follow) every step has its own slices and the gradient buffer DA is reserved too; without it
    (inference) the gate and cell buffers are one step's, reused, and only the hidden states are kept
    for every step.
    """

    def __init__(self, like: torch.Tensor, steps: int, batch: int, hidden: int, keep: bool) -> None:
        gates = 4 * hidden
        n_s = steps if keep else 1  # steps with their own gate buffers
        shapes = {
            "S": (n_s, batch, gates),  # pre-activations, then sigmoid outputs i, f, s_g, o
            "DA": (steps if keep else 0, batch, gates),  # the gradients da_t (backward)
            "G": (1, batch, hidden),  # g = tanh(a_g) = 2 s_g - 1 of the current step
            "TC": (n_s, batch, hidden),  # tanh(c_t)
            "H": (steps + 1, batch, hidden),  # h0, h_1 .. h_T
            "C": (steps + 1 if keep else 2, batch, hidden),  # c0, c_1 .. c_T, or two alternating slots
        }
        block = _block(like, sum(math.prod(shape) for shape in shapes.values()))  # claims the storage
        storage = block.untyped_storage()
        buffers, offset = [], 0
        for shape in shapes.values():
            buffers.append(like.new_empty(0).set_(storage, offset, shape))
            offset += math.prod(shape)
        self.S, self.DA, self.G, self.TC, self.H, self.C = buffers
        self.hs = self.H.unbind(0)
        if keep:
            self.ss, self.tcs, self.cs = self.S.unbind(0), self.TC.unbind(0), self.C.unbind(0)
            self.gate_steps = [gate.unbind(0) for gate in self.S.view(steps, batch, 4, hidden).unbind(2)]
        else:
            self.ss, self.tcs = [self.S[0]] * steps, [self.TC[0]] * steps
            self.cs = [self.C[t % 2] for t in range(steps + 1)]
            self.gate_steps = [[gate] * steps for gate in self.S[0].chunk(4, 1)]


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer over all time steps: ``apply(x_proj, h0, c0, W_hh, keep=True) -> (hs, h_T, c_T)``.

    Shapes: x_proj (T, batch, 4h) time-major, input projection and bias included; h0, c0 (batch, h);
    W_hh (4h, h). Returns hs (T, batch, h), the hidden state of every step, and the last h_T and
    c_T (batch, h), all views of buffers saved for backward (changing them in place is an error).
    ``keep=False`` (inference: ``lstm_sequence`` passes it when no gradient is wanted) saves nothing and
    reuses one step's gate buffers. The gradient is derived in the module docstring.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x_proj: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        W_hh: torch.Tensor,
        keep: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, batch, gates = x_proj.shape
        hidden = gates // 4
        dtype = _compute_dtype(x_proj, h0, c0, W_hh)
        with torch.autocast(x_proj.device.type, enabled=False):
            W_t = W_hh.to(dtype).t()  # (h, 4h)
            x = x_proj.to(dtype)
            two, minus_one = _constants(x, 2.0, -1.0)  # 0-dim tensors: cheaper per call than Python floats
            ws = _Workspace(x, steps, batch, hidden, keep)
            ws.H[0].copy_(h0)
            ws.C[0].copy_(c0)
            hs, cs, ss, tcs, g = ws.hs, ws.cs, ws.ss, ws.tcs, ws.G[0]
            i_, f_, sg_, o_ = ws.gate_steps
            xs = x.unbind(0)
            for t in range(steps):
                s, sg, c, tc = ss[t], sg_[t], cs[t + 1], tcs[t]
                torch.addmm(xs[t], hs[t], W_t, out=s)  # a_t, (batch, 4h)
                sg.mul_(two)
                s.sigmoid_()  # i, f, s_g = sigmoid(2 a_g), o: one pass over the 4h block
                torch.add(minus_one, sg, alpha=2, out=g)  # g = 2 s_g - 1
                torch.mul(f_[t], cs[t], out=c).addcmul_(i_[t], g)  # c_t = f c_{t-1} + i g
                torch.mul(c, two, out=tc).sigmoid_()
                torch.add(minus_one, tc, alpha=2, out=tc)  # tanh(c_t) = 2 sigmoid(2 c_t) - 1
                torch.mul(o_[t], tc, out=hs[t + 1])  # h_t = o tanh(c_t)
        ctx.set_materialize_grads(False)
        if keep:
            ctx.save_for_backward(ws.S, ws.H, ws.C, ws.TC, W_hh)
            ctx.da = ws.DA  # type: ignore[attr-defined]  # written by the first backward (not saved: it changes)
        ctx.dtypes = (x_proj.dtype, h0.dtype, c0.dtype, W_hh.dtype)  # type: ignore[attr-defined]
        return ws.H[1:], hs[steps], cs[steps]

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, d_out: torch.Tensor | None, d_hT: torch.Tensor | None, d_cT: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        if not ctx.saved_tensors:
            raise UsageError("LSTMFunction.apply(..., keep=False) saves nothing to differentiate: pass keep=True")
        S, H, C, TC, W_hh = ctx.saved_tensors
        steps, batch, gates = S.shape
        hidden = gates // 4
        dtype = S.dtype
        need_x, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        with torch.no_grad(), torch.autocast(S.device.type, enabled=False):
            W = W_hh.to(dtype)  # (4h, h)
            four, minus_one = _constants(S, 4.0, -1.0)
            # The first backward writes into the buffer reserved by forward; another one (retain_graph)
            # gets a new one, so that a gradient already handed out is never overwritten.
            DA = ctx.da if ctx.da is not None else torch.empty_like(S)  # (T, batch, 4h)
            ctx.da = None
            M = S.new_empty((batch, gates))  # what multiplies s (1 - s): dc g, dc c_{t-1}, 4 dc i, dh tanh(c_t)
            m_i, m_f, m_g, m_o = M.chunk(4, 1)  # each (batch, h)
            dh = S.new_zeros((batch, hidden)) if d_hT is None else d_hT.to(dtype, copy=True)  # (batch, h)
            dc = S.new_zeros((batch, hidden)) if d_cT is None else d_cT.to(dtype, copy=True)  # (batch, h)
            if d_out is not None:
                dh.add_(d_out[steps - 1])
            ss, das, hs, cs, tcs = S.unbind(0), DA.unbind(0), H.unbind(0), C.unbind(0), TC.unbind(0)
            i_, f_, sg_, o_ = (gate.unbind(0) for gate in S.view(steps, batch, 4, hidden).unbind(2))
            for t in range(steps - 1, -1, -1):
                s, da = ss[t], das[t]
                torch.mul(dh, tcs[t], out=m_o)  # dh tanh(c_t)
                # dc_t += dh o (1 - tanh(c_t)^2) = dh o - (dh tanh(c_t)) h_t, as h_t = o tanh(c_t)
                dc.addcmul_(dh, o_[t]).addcmul_(m_o, hs[t + 1], value=-1.0)
                torch.add(minus_one, sg_[t], alpha=2, out=m_i).mul_(dc)  # dc g = dc (2 s_g - 1)
                torch.mul(dc, cs[t], out=m_f)
                torch.mul(dc, i_[t], out=m_g).mul_(four)
                dc.mul_(f_[t])  # dc_{t-1} from step t
                torch.addcmul(s, s, s, value=-1.0, out=da).mul_(M)  # da_t = s (1 - s) M
                if t > 0:
                    if d_out is None:
                        torch.mm(da, W, out=dh)
                    else:
                        torch.addmm(d_out[t - 1], da, W, out=dh)
                elif need_h0:
                    torch.mm(da, W, out=dh)
            # dW_hh = DA^T H_prev in one product over all steps, (4h, h); computed as (H_prev^T DA)^T,
            # which MKL runs a few per cent faster than the transposed-A form.
            dW = torch.mm(H[:-1].view(steps * batch, hidden).t(), DA.view(steps * batch, gates)).t() if need_w else None
        x_dtype, h_dtype, c_dtype, w_dtype = ctx.dtypes
        return (
            DA.to(x_dtype) if need_x else None,
            dh.to(h_dtype) if need_h0 else None,
            dc.to(c_dtype) if need_c0 else None,
            dW.to(w_dtype) if dW is not None else None,
        ) + (None,) * (len(ctx.needs_input_grad) - 4)  # keep, where it was passed


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
    if state is None:
        zeros = x_proj.new_zeros(x_proj.shape[1], W_hh.shape[1])  # (batch, h)
        state = (zeros, zeros)
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (x_proj, state[0], state[1], W_hh))
    hs, h, c = LSTMFunction.apply(x_proj, state[0], state[1], W_hh, keep)
    return hs, (h, c)
