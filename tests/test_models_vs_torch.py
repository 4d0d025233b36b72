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


def _torch_rnn(model: VanillaRNN) -> tuple[torch.nn.RNN, torch.nn.Linear]:
    rnn = torch.nn.RNN(INPUT, HIDDEN, nonlinearity="tanh", batch_first=True).double()
    head = torch.nn.Linear(HIDDEN, CLASSES).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(model.W_hx)
        rnn.weight_hh_l0.copy_(model.W_hh)
        rnn.bias_ih_l0.copy_(model.b_h)
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(model.W_ph)
        head.bias.copy_(model.b_p)
    return rnn, head


def _torch_lstm(model: LSTM) -> tuple[torch.nn.LSTM, torch.nn.Linear]:
    lstm = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True).double()
    head = torch.nn.Linear(HIDDEN, CLASSES).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(model.W_gx)
        lstm.weight_hh_l0.copy_(model.W_gh)
        lstm.bias_ih_l0.copy_(model.b_g)
        lstm.bias_hh_l0.zero_()
        head.weight.copy_(model.W_ph)
        head.bias.copy_(model.b_p)
    return lstm, head


def test_rnn_matches_torch_outputs_and_gradients():
    torch.manual_seed(0)
    model = VanillaRNN(INPUT, HIDDEN, CLASSES).double()
    rnn, head = _torch_rnn(model)
    x, y = _inputs()
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()

    ours = model(x_ours)
    ref = head(rnn(x_ref)[0][:, -1])
    torch.testing.assert_close(ours, ref)

    torch.nn.functional.cross_entropy(ours, y).backward()
    torch.nn.functional.cross_entropy(ref, y).backward()
    torch.testing.assert_close(model.W_hx.grad, rnn.weight_ih_l0.grad)
    torch.testing.assert_close(model.W_hh.grad, rnn.weight_hh_l0.grad)
    torch.testing.assert_close(model.b_h.grad, rnn.bias_ih_l0.grad)
    torch.testing.assert_close(model.W_ph.grad, head.weight.grad)
    torch.testing.assert_close(model.b_p.grad, head.bias.grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


@pytest.mark.parametrize("init", ["gers", "torch"])
def test_lstm_matches_torch_outputs_and_gradients(init):
    torch.manual_seed(0)
    model = LSTM(INPUT, HIDDEN, CLASSES, init=init).double()
    lstm, head = _torch_lstm(model)
    x, y = _inputs(1)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()

    ours = model(x_ours)
    ref = head(lstm(x_ref)[0][:, -1])
    torch.testing.assert_close(ours, ref)

    torch.nn.functional.cross_entropy(ours, y).backward()
    torch.nn.functional.cross_entropy(ref, y).backward()
    torch.testing.assert_close(model.W_gx.grad, lstm.weight_ih_l0.grad)
    torch.testing.assert_close(model.W_gh.grad, lstm.weight_hh_l0.grad)
    torch.testing.assert_close(model.b_g.grad, lstm.bias_ih_l0.grad)
    torch.testing.assert_close(model.W_ph.grad, head.weight.grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


def test_lstm_hidden_state_matches_torch_with_initial_state():
    torch.manual_seed(0)
    model = LSTM(INPUT, HIDDEN, CLASSES).double()
    lstm, _ = _torch_lstm(model)
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


@pytest.mark.parametrize("i,h,d", [(10, 128, 10), (1, 128, 10), (7, 3, 2)])
def test_lstm_parameter_count_formula(i, h, d):
    model = LSTM(i, h, d)
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counted == 4 * h * (i + h + 1) + d * (h + 1)
    assert lstm_count(LSTMConfig(hidden_size=h), input_size=i, num_classes=d) == counted


def test_rnn_parameter_count_formula():
    model = VanillaRNN(10, 32, 10)
    counted = sum(p.numel() for p in model.parameters())
    assert rnn_count(RNNConfig(hidden_size=32), input_size=10, num_classes=10) == counted == 32 * 43 + 10 * 33


def test_models_use_no_torch_recurrent_layers():
    for model in (VanillaRNN(3, 4, 2), LSTM(3, 4, 2)):
        kinds = {type(m) for m in model.modules()} - {type(model)}
        assert not kinds, f"{type(model).__name__} contains {kinds}"
