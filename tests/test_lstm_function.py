"""LSTMFunction and LSTMLayerFunction (the fused LSTM with a hand-derived backward pass, from x_proj and
from the inputs) against autograd through the ``lstm_cell`` loop, gradcheck, torch.nn.LSTM, and the
two models that use them (``lstm`` and the ``scratch`` backend of ``charlstm``) with ``impl`` fused
against autograd."""

from __future__ import annotations

import pytest
import torch

from rnnkit.errors import UsageError
from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig
from rnnkit.models.lstm import LSTM, LSTMConfig, lstm_cell
from rnnkit.models.lstm_function import LSTMFunction, LSTMLayerFunction, lstm_layer, lstm_sequence
from rnnkit.registry import default_registry

State = tuple[torch.Tensor, torch.Tensor]


def reference(x_proj: torch.Tensor, W_hh: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
    """The readable version: ``lstm_cell`` in a loop, differentiated by autograd. x_proj (T, batch, 4h)."""
    steps, batch, gates = x_proj.shape
    if state is None:
        zeros = x_proj.new_zeros(batch, gates // 4)
        state = (zeros, zeros)
    h, c = state
    outputs = []
    for x_t in x_proj.unbind(0):
        h, c = lstm_cell(x_t, h, c, W_hh.t())
        outputs.append(h)
    return torch.stack(outputs), (h, c)


def _inputs(steps: int, batch: int, hidden: int, with_state: bool, dtype: torch.dtype, seed: int = 0) -> list:
    """x_proj (T, batch, 4h), W_hh (4h, h) and (h0, c0) or None, all leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x_proj = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=dtype)
    W_hh = torch.randn(4 * hidden, hidden, generator=g, dtype=dtype) / hidden**0.5
    state = [torch.randn(batch, hidden, generator=g, dtype=dtype) for _ in range(2)] if with_state else []
    return [t.requires_grad_() for t in (x_proj, W_hh, *state)]


def _loss(hs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, used: str, seed: int = 1) -> torch.Tensor:
    """A weighted sum of the outputs ``used`` ("all", "h" or "hs"): every mix of gradients backward gets."""
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (hs, h, c)]
    terms = {"hs": [0], "h": [1], "all": [0, 1, 2]}[used]
    return sum((t * w).sum() for k, (t, w) in enumerate(zip((hs, h, c), weights, strict=True)) if k in terms)


def _run(fn, leaves: list, used: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    x_proj, W_hh, *state = leaves
    hs, (h, c) = fn(x_proj, W_hh, tuple(state) if state else None)
    grads = torch.autograd.grad(_loss(hs, h, c, used), leaves, allow_unused=True)
    return [hs, h, c], list(grads)


@pytest.mark.parametrize("steps", [1, 2, 7, 35])
@pytest.mark.parametrize("batch,hidden", [(1, 1), (3, 5), (8, 32)])
@pytest.mark.parametrize("with_state", [False, True])
def test_outputs_and_gradients_equal_autograd(steps, batch, hidden, with_state):
    leaves = _inputs(steps, batch, hidden, with_state, torch.float32)
    outs, grads = _run(lstm_sequence, leaves, "all")
    ref_outs, ref_grads = _run(reference, leaves, "all")
    for name, a, b in zip(["hs", "h_T", "c_T"], outs, ref_outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    for name, a, b in zip(["x_proj", "W_hh", "h0", "c0"], grads, ref_grads, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def reference_layer(
    x: torch.Tensor, W_ih: torch.Tensor, bias: torch.Tensor | None, W_hh: torch.Tensor, state: State | None
) -> tuple[torch.Tensor, State]:
    """The readable version of ``lstm_layer``: the input projection by autograd, then ``reference``."""
    x_proj = x @ W_ih.t() + (0.0 if bias is None else bias)  # (T, batch, 4h)
    return reference(x_proj, W_hh, state)


def _layer_inputs(
    steps: int, batch: int, hidden: int, inputs: int, with_state: bool, with_bias: bool, dtype: torch.dtype
) -> list:
    """x (T, batch, input) as a time-major view of a batch-first tensor, W_ih, bias or None, W_hh and
    the state or None, all requiring grad."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, steps, inputs, generator=g, dtype=dtype).transpose(0, 1)
    W_ih = torch.randn(4 * hidden, inputs, generator=g, dtype=dtype) / inputs**0.5
    bias = torch.randn(4 * hidden, generator=g, dtype=dtype) if with_bias else None
    W_hh = torch.randn(4 * hidden, hidden, generator=g, dtype=dtype) / hidden**0.5
    state = [torch.randn(batch, hidden, generator=g, dtype=dtype) for _ in range(2)] if with_state else []
    return [t if t is None else t.requires_grad_() for t in (x, W_ih, bias, W_hh, *state)]


def _run_layer(fn, leaves: list, used: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    x, W_ih, bias, W_hh, *state = leaves
    hs, (h, c) = fn(x, W_ih, bias, W_hh, tuple(state) if state else None)
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(_loss(hs, h, c, used), wanted, allow_unused=True)
    return [hs, h, c], list(grads)


@pytest.mark.parametrize("steps", [1, 2, 7, 35])
@pytest.mark.parametrize("batch,hidden,inputs", [(1, 1, 1), (3, 5, 4), (8, 32, 10)])
@pytest.mark.parametrize("with_state", [False, True])
def test_layer_outputs_and_gradients_equal_autograd(steps, batch, hidden, inputs, with_state):
    """lstm_layer (the input projection inside, one product for all weight gradients) against autograd,
    every parameter's gradient and the input's."""
    leaves = _layer_inputs(steps, batch, hidden, inputs, with_state, True, torch.float32)
    outs, grads = _run_layer(lstm_layer, leaves, "all")
    ref_outs, ref_grads = _run_layer(reference_layer, leaves, "all")
    for name, a, b in zip(["hs", "h_T", "c_T"], outs, ref_outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    for name, a, b in zip(["x", "W_ih", "bias", "W_hh", "h0", "c0"], grads, ref_grads, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("used", ["h", "hs"])
def test_layer_without_bias_and_with_some_outputs(used):
    leaves = _layer_inputs(9, 4, 6, 3, True, False, torch.float32)
    outs, grads = _run_layer(lstm_layer, leaves, used)
    ref_outs, ref_grads = _run_layer(reference_layer, leaves, used)
    for a, b in zip([*outs, *grads], [*ref_outs, *ref_grads], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps,with_state", [(1, True), (2, False), (7, True), (7, False)])
def test_layer_gradcheck_float64(steps, with_state):
    x, W_ih, bias, W_hh, *state = _layer_inputs(steps, 2, 3, 2, with_state, True, torch.float64)
    h0, c0 = state if state else (None, None)
    assert torch.autograd.gradcheck(LSTMLayerFunction.apply, (x, h0, c0, W_hh, W_ih, bias), check_undefined_grad=True)


def test_gradcheck_float64_without_state():
    """LSTMFunction with h0 = c0 = None (zeros: the first step leaves h0's product out)."""
    x_proj, W_hh, *_ = _inputs(4, 2, 3, False, torch.float64)
    assert torch.autograd.gradcheck(LSTMFunction.apply, (x_proj, None, None, W_hh), check_undefined_grad=True)


def test_layer_agrees_with_torch_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 6).double()  # time-major, like lstm_layer
    x = torch.randn(11, 3, 5, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64))
    out, (h, c) = ref(x, state)
    (out.square().sum() + h.sum() + c.sum()).backward()
    W_ih, W_hh = (
        ref.weight_ih_l0.detach().clone().requires_grad_(),
        ref.weight_hh_l0.detach().clone().requires_grad_(),
    )
    bias = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    hs, (h2, c2) = lstm_layer(x2, W_ih, bias, W_hh, (state[0][0], state[1][0]))
    (hs.square().sum() + h2.sum() + c2.sum()).backward()
    for a, b in ((hs, out), (h2, h[0]), (c2, c[0]), (x2.grad, x.grad), (bias.grad, ref.bias_ih_l0.grad)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(W_hh.grad, ref.weight_hh_l0.grad)
    torch.testing.assert_close(W_ih.grad, ref.weight_ih_l0.grad)


def test_layer_backward_twice_and_inference():
    """A second backward through the graph (the first wrote its gradients over the kept gates, so the
    forward loop runs again) gives the same gradients; without gradients the outputs are the same."""
    leaves = _layer_inputs(6, 3, 4, 2, True, True, torch.float32)
    x, W_ih, bias, W_hh, h0, c0 = leaves
    hs, (h, c) = lstm_layer(x, W_ih, bias, W_hh, (h0, c0))
    loss = _loss(hs, h, c, "all")
    first = [g.clone() for g in torch.autograd.grad(loss, leaves, retain_graph=True)]
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        fast = lstm_layer(x, W_ih, bias, W_hh, (h0, c0))
    for a, b in zip([fast[0], *fast[1]], [hs, h, c], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        h.mul_(2)  # a view of the saved hidden states
        hs.sum().backward()


def test_layer_bfloat16_and_autocast():
    leaves = _layer_inputs(6, 4, 8, 3, True, True, torch.float32)
    outs, grads = _run_layer(lstm_layer, leaves, "all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_outs, auto_grads = _run_layer(lstm_layer, leaves, "all")
    assert all(t.dtype == torch.bfloat16 for t in auto_outs)
    assert all(g.dtype == torch.float32 for g in auto_grads)
    for a, b in zip([*auto_outs, *auto_grads], [*outs, *grads], strict=True):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)


def test_layer_shapes_are_checked():
    x, W_ih, W_hh = torch.zeros(3, 2, 5), torch.zeros(8, 5), torch.zeros(8, 2)
    for args in ((x, W_ih[:, :4], None, W_hh), (x[:0], W_ih, None, W_hh), (x, W_ih, torch.zeros(7), W_hh)):
        with pytest.raises(UsageError, match=r"lstm_layer needs x \(T, batch, input\)"):
            lstm_layer(*args)


@pytest.mark.parametrize("used", ["h", "hs"])
def test_gradients_when_only_some_outputs_are_used(used):
    """Outputs that get no gradient reach backward as None (the lstm model uses only h_T)."""
    leaves = _inputs(9, 4, 6, True, torch.float32)
    _, grads = _run(lstm_sequence, leaves, used)
    _, ref_grads = _run(reference, leaves, used)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps,batch,hidden", [(1, 2, 3), (2, 3, 2), (7, 2, 3), (35, 2, 2)])
def test_gradcheck_float64(steps, batch, hidden):
    x_proj, W_hh, h0, c0 = _inputs(steps, batch, hidden, True, torch.float64)
    assert torch.autograd.gradcheck(
        LSTMFunction.apply, (x_proj, h0, c0, W_hh), fast_mode=steps > 7, check_undefined_grad=True
    )


def test_inference_path_and_no_grad_inputs():
    """Without gradients the workspace keeps one step's gates: the same outputs; with inputs that need
    no gradient backward returns None for them."""
    leaves = _inputs(6, 3, 4, True, torch.float32)
    with torch.no_grad():
        fast = lstm_sequence(leaves[0], leaves[1], (leaves[2], leaves[3]))
    kept = lstm_sequence(leaves[0], leaves[1], (leaves[2], leaves[3]))
    for a, b in zip([fast[0], *fast[1]], [kept[0], *kept[1]], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    x_proj = leaves[0].detach().requires_grad_()
    hs, _ = lstm_sequence(x_proj, leaves[1].detach(), (leaves[2].detach(), leaves[3].detach()))
    hs.sum().backward()
    ref = x_proj.detach().requires_grad_()
    reference(ref, leaves[1].detach(), (leaves[2].detach(), leaves[3].detach()))[0].sum().backward()
    torch.testing.assert_close(x_proj.grad, ref.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="keep=False"):
        LSTMFunction.apply(leaves[0], leaves[2], leaves[3], leaves[1], False)[0].sum().backward()


def test_backward_twice_with_retain_graph():
    """A second backward through the same graph gets the same gradients and leaves the first intact."""
    x_proj, W_hh, h0, c0 = _inputs(5, 3, 4, True, torch.float32)
    hs, (h, c) = lstm_sequence(x_proj, W_hh, (h0, c0))
    loss = _loss(hs, h, c, "all")
    first = torch.autograd.grad(loss, [x_proj, W_hh, h0, c0], retain_graph=True)
    kept = [g.clone() for g in first]
    second = torch.autograd.grad(loss, [x_proj, W_hh, h0, c0])
    for a, b, c_ in zip(first, kept, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c_, rtol=0, atol=0)


def test_returned_states_cannot_be_changed_in_place_behind_backward():
    x_proj, W_hh = _inputs(4, 2, 3, False, torch.float32)
    hs, (h, _) = lstm_sequence(x_proj, W_hh)
    with pytest.raises(RuntimeError):
        h.mul_(2)  # a view of the saved hidden states
        hs.sum().backward()


def test_bfloat16_and_autocast():
    """bfloat16 inputs run in bfloat16; float32 inputs under CPU autocast run in autocast's dtype and get
    float32 gradients; both close to float32 (bfloat16 keeps 8 bits)."""
    leaves = _inputs(6, 4, 8, True, torch.float32)
    outs, grads = _run(lstm_sequence, leaves, "all")
    low = [t.detach().bfloat16().requires_grad_() for t in leaves]
    low_outs, low_grads = _run(lstm_sequence, low, "all")
    assert all(t.dtype == torch.bfloat16 for t in [*low_outs, *low_grads])
    for a, b in zip([*low_outs, *low_grads], [*outs, *grads], strict=True):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_outs, auto_grads = _run(lstm_sequence, leaves, "all")
    assert all(t.dtype == torch.bfloat16 for t in auto_outs)
    assert all(g.dtype == torch.float32 for g in auto_grads)
    for a, b in zip([*auto_outs, *auto_grads], [*outs, *grads], strict=True):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    leaves = _inputs(7, 3, 8, True, torch.float32)
    outs, grads = _run(lstm_sequence, leaves, "all")
    cuda = [t.detach().cuda().requires_grad_() for t in leaves]
    cuda_outs, cuda_grads = _run(lstm_sequence, cuda, "all")
    for a, b in zip([*cuda_outs, *cuda_grads], [*outs, *grads], strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


def test_agrees_with_torch_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 6).double()  # time-major, like LSTMFunction
    x = torch.randn(11, 3, 5, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64))
    out, (h, c) = ref(x, state)
    (out.square().sum() + h.sum() + c.sum()).backward()

    W_ih, W_hh = ref.weight_ih_l0.detach().clone(), ref.weight_hh_l0.detach().clone().requires_grad_()
    W_ih.requires_grad_()
    bias = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    x_proj = torch.addmm(bias, x2.flatten(0, 1), W_ih.t()).view(11, 3, 24)
    hs, (h2, c2) = lstm_sequence(x_proj, W_hh, (state[0][0], state[1][0]))
    (hs.square().sum() + h2.sum() + c2.sum()).backward()
    torch.testing.assert_close(hs, out)
    torch.testing.assert_close(h2, h[0])
    torch.testing.assert_close(c2, c[0])
    torch.testing.assert_close(W_hh.grad, ref.weight_hh_l0.grad)
    torch.testing.assert_close(W_ih.grad, ref.weight_ih_l0.grad)
    torch.testing.assert_close(bias.grad, ref.bias_ih_l0.grad)
    torch.testing.assert_close(x2.grad, x.grad)


def _same_grads(a: torch.nn.Module, b: torch.nn.Module) -> None:
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("init", ["gers", "torch"])
def test_lstm_model_fused_equals_autograd(init):
    torch.manual_seed(0)
    fused = LSTM(7, 12, 5, init=init, impl="fused")
    slow = LSTM(7, 12, 5, init=init, impl="autograd")
    slow.load_state_dict(fused.state_dict())  # one weight layout
    x = torch.randn(4, 9, 7)
    y = torch.randint(0, 5, (4,))
    logits, ref = fused(x), slow(x)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-6)
    torch.nn.functional.cross_entropy(logits, y).backward()
    torch.nn.functional.cross_entropy(ref, y).backward()
    _same_grads(fused, slow)
    state = (torch.randn(4, 12), torch.randn(4, 12))
    for a, b in zip(fused.hidden_states(x, state), slow.hidden_states(x, state), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _charlstm_pair(layers: int, dropout: float = 0.0) -> tuple[CharLSTM, CharLSTM]:
    torch.manual_seed(0)
    cfg = dict(embedding_size=6, hidden_size=9, layers=layers, dropout=dropout, backend="scratch")
    fused = CharLSTM(11, CharLSTMConfig(**cfg, scratch_impl="fused"))
    slow = CharLSTM(11, CharLSTMConfig(**cfg, scratch_impl="autograd"))
    slow.load_state_dict(fused.state_dict())
    return fused, slow


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("with_state", [False, True])
def test_charlstm_scratch_fused_equals_autograd(layers, with_state):
    fused, slow = _charlstm_pair(layers)
    tokens = torch.randint(0, 11, (4, 13))
    state = (torch.randn(layers, 4, 9), torch.randn(layers, 4, 9)) if with_state else None
    (logits, (h, c)), (ref, (h_ref, c_ref)) = fused(tokens, state), slow(tokens, state)
    assert logits.shape == (4, 13, 11) and logits.is_contiguous()
    for a, b in ((logits, ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (logits.square().mean() + h.sum() + c.sum()).backward()
    (ref.square().mean() + h_ref.sum() + c_ref.sum()).backward()
    _same_grads(fused, slow)


def test_charlstm_dropout_between_layers():
    """Dropout applies in training (masks are drawn in each implementation's own layout), not in eval."""
    fused, slow = _charlstm_pair(2, dropout=0.5)
    tokens = torch.randint(0, 11, (4, 13))
    fused.eval(), slow.eval()
    torch.testing.assert_close(fused(tokens)[0], slow(tokens)[0], rtol=1e-5, atol=1e-6)
    fused.train()
    torch.manual_seed(1)
    logits, _ = fused(tokens)
    assert not torch.allclose(logits, fused.eval()(tokens)[0])
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters())


def test_new_fields_default_to_fused_so_old_configs_load():
    assert LSTMConfig().impl == "fused"
    assert CharLSTMConfig().scratch_impl == "fused"
    registry = default_registry()
    lstm = registry.get("lstm").make_config({"hidden_size": 8})  # an old spec: no impl key
    assert lstm.impl == "fused"
    assert registry.get("charlstm").make_config({"backend": "scratch"}).scratch_impl == "fused"


def test_shapes_are_checked():
    for x_proj, W_hh in ((torch.zeros(3, 2, 10), torch.zeros(8, 2)), (torch.zeros(0, 2, 8), torch.zeros(8, 2))):
        with pytest.raises(UsageError, match=r"x_proj \(T, batch, 4h\) with T >= 1"):
            lstm_sequence(x_proj, W_hh)


def test_buffers_are_reused_only_when_nothing_refers_to_them():
    """CPU workspaces come from a pool: a block is handed out again once its outputs, saved tensors and
    gradients are gone, never while any of them is alive."""
    x_proj, W_hh, h0, c0 = _inputs(5, 3, 4, True, torch.float32)
    hs, (h, c) = lstm_sequence(x_proj, W_hh, (h0, c0))
    kept = [t.clone() for t in (hs, h, c)]
    for _ in range(3):  # calls while the first outputs are alive, with and without backward
        _run(lstm_sequence, [x_proj, W_hh, h0, c0], "all")
        with torch.no_grad():
            lstm_sequence(x_proj * 2, W_hh, (h0, c0))
    for a, b in zip((hs, h, c), kept, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        first = lstm_sequence(x_proj, W_hh)[0]
        where = first.untyped_storage().data_ptr()
        del first
        assert lstm_sequence(x_proj, W_hh)[0].untyped_storage().data_ptr() == where
