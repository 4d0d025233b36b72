"""The from-scratch RNN and LSTM against torch.nn.RNN / torch.nn.LSTM on copied weights."""

from __future__ import annotations

import pytest
import torch

from rnnkit.models.lstm import LSTM, LSTMConfig
from rnnkit.models.lstm import count_parameters as lstm_count
from rnnkit.models.rnn import RNNConfig, VanillaRNN
from rnnkit.models.rnn import count_parameters as rnn_count

INPUT, HIDDEN, CLASSES, BATCH, SEQ = 7, 12, 5, 4, 9


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, SEQ, INPUT, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    return x, y


#: Per model kind: ours, torch's twin, and which of our parameters torch calls weight_ih, weight_hh and
#: bias_ih (torch's bias_hh is zeroed: ours has one bias).
TWINS = {
    "rnn": (
        lambda init: VanillaRNN(INPUT, HIDDEN, CLASSES),
        lambda: torch.nn.RNN(INPUT, HIDDEN, nonlinearity="tanh", batch_first=True),
        ("W_hx", "W_hh", "b_h"),
    ),
    "lstm": (
        lambda init: LSTM(INPUT, HIDDEN, CLASSES, init=init),
        lambda: torch.nn.LSTM(INPUT, HIDDEN, batch_first=True),
        ("W_gx", "W_gh", "b_g"),
    ),
}


def _torch_twin(kind: str, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """torch's recurrent layer and a Linear head, in float64, with ``model``'s weights copied in."""
    _, make_reference, (w_x, w_h, b) = TWINS[kind]
    reference = make_reference().double()
    head = torch.nn.Linear(HIDDEN, CLASSES).double()
    with torch.no_grad():
        reference.weight_ih_l0.copy_(getattr(model, w_x))
        reference.weight_hh_l0.copy_(getattr(model, w_h))
        reference.bias_ih_l0.copy_(getattr(model, b))
        reference.bias_hh_l0.zero_()
        head.weight.copy_(model.W_ph)
        head.bias.copy_(model.b_p)
    return reference, head


@pytest.mark.parametrize(
    "kind,init,seed",
    [("rnn", None, 0), ("lstm", "gers", 1), ("lstm", "torch", 1)],
    ids=["rnn", "lstm-gers", "lstm-torch"],
)
def test_matches_torch_outputs_and_gradients(kind, init, seed):
    make, _, (w_x, w_h, b) = TWINS[kind]
    torch.manual_seed(0)
    model = make(init).double()
    reference, head = _torch_twin(kind, model)
    x, y = _inputs(seed)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()

    ours = model(x_ours)
    ref = head(reference(x_ref)[0][:, -1])
    torch.testing.assert_close(ours, ref)

    torch.nn.functional.cross_entropy(ours, y).backward()
    torch.nn.functional.cross_entropy(ref, y).backward()
    torch.testing.assert_close(getattr(model, w_x).grad, reference.weight_ih_l0.grad)
    torch.testing.assert_close(getattr(model, w_h).grad, reference.weight_hh_l0.grad)
    torch.testing.assert_close(getattr(model, b).grad, reference.bias_ih_l0.grad)
    torch.testing.assert_close(model.W_ph.grad, head.weight.grad)
    torch.testing.assert_close(model.b_p.grad, head.bias.grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


def test_lstm_hidden_state_matches_torch_with_initial_state():
    torch.manual_seed(0)
    model = LSTM(INPUT, HIDDEN, CLASSES).double()
    lstm, _ = _torch_twin("lstm", model)
    x, _ = _inputs(2)
    h0 = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
    c0 = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
    h, c = model.hidden_states(x, (h0, c0))
    _, (h_ref, c_ref) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(h, h_ref[0])
    torch.testing.assert_close(c, c_ref[0])


def test_gers_init_sets_forget_bias_only():
    model = LSTM(INPUT, HIDDEN, CLASSES, init="gers", forget_bias=2.0)
    b = model.b_g.detach()
    assert torch.all(b[HIDDEN : 2 * HIDDEN] == 2.0)
    assert torch.all(b[:HIDDEN] == 0) and torch.all(b[2 * HIDDEN :] == 0)
    torch_init = LSTM(INPUT, HIDDEN, CLASSES, init="torch")
    assert torch_init.b_g.detach().abs().max() <= 1 / HIDDEN**0.5


@pytest.mark.parametrize(
    "kind,i,h,d", [("lstm", 10, 128, 10), ("lstm", 1, 128, 10), ("lstm", 7, 3, 2), ("rnn", 10, 32, 10)]
)
def test_parameter_count_formula(kind, i, h, d):
    """``gates * h * (i + h + 1)`` for the recurrence (one gate for the RNN, four for the LSTM) plus
    ``d * (h + 1)`` for the output layer; the registry's count_parameters agrees without building one."""
    model, config, count, gates = {
        "rnn": (VanillaRNN(i, h, d), RNNConfig(hidden_size=h), rnn_count, 1),
        "lstm": (LSTM(i, h, d), LSTMConfig(hidden_size=h), lstm_count, 4),
    }[kind]
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counted == sum(p.numel() for p in model.parameters())
    assert counted == gates * h * (i + h + 1) + d * (h + 1)
    assert count(config, input_size=i, num_classes=d) == counted


def test_models_use_no_torch_recurrent_layers():
    for model in (VanillaRNN(3, 4, 2), LSTM(3, 4, 2)):
        kinds = {type(m) for m in model.modules()} - {type(model)}
        assert not kinds, f"{type(model).__name__} contains {kinds}"
