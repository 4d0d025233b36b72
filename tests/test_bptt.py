"""The report's question 1.1: a hand-written backward pass through time of the vanilla RNN.

For L = CE(p_T, y) with p_T = W_ph h_T + b_p, h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h):
    dL/dp_T   = softmax(p_T) - onehot(y)
    dL/dW_ph  = dL/dp_T^T h_T
    dL/dh_T   = dL/dp_T W_ph
    dL/da_t   = dL/dh_t * (1 - h_t^2)                       (a_t the pre-activation)
    dL/dW_hh += dL/da_t^T h_{t-1},  dL/dW_hx += dL/da_t^T x_t,  dL/dh_{t-1} = dL/da_t W_hh
"""

from __future__ import annotations

import torch

from rnnkit.models.rnn import VanillaRNN


def bptt(model: VanillaRNN, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the mean cross-entropy of the last step, by hand."""
    batch, seq, _ = x.shape
    W_hx, W_hh, b_h = model.W_hx.detach(), model.W_hh.detach(), model.b_h.detach()
    W_ph, b_p = model.W_ph.detach(), model.b_p.detach()
    hs = [torch.zeros(batch, model.hidden_size, dtype=x.dtype)]
    for t in range(seq):
        hs.append(torch.tanh(x[:, t] @ W_hx.T + hs[-1] @ W_hh.T + b_h))
    p = hs[-1] @ W_ph.T + b_p
    dp = (torch.softmax(p, dim=1) - torch.nn.functional.one_hot(y, p.shape[1]).to(x.dtype)) / batch
    grads = {"W_ph": dp.T @ hs[-1], "b_p": dp.sum(0)}
    dh = dp @ W_ph
    dW_hh, dW_hx, db_h = torch.zeros_like(W_hh), torch.zeros_like(W_hx), torch.zeros_like(b_h)
    for t in range(seq, 0, -1):
        da = dh * (1 - hs[t] ** 2)
        dW_hh += da.T @ hs[t - 1]
        dW_hx += da.T @ x[:, t - 1]
        db_h += da.sum(0)
        dh = da @ W_hh
    grads.update({"W_hh": dW_hh, "W_hx": dW_hx, "b_h": db_h})
    return grads


def test_hand_written_bptt_matches_autograd():
    torch.manual_seed(0)
    model = VanillaRNN(10, 16, 10).double()
    digits = torch.randint(0, 10, (8, 12))
    x = torch.nn.functional.one_hot(digits, 10).double()
    y = torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    manual = bptt(model, x, y)
    for name in ("W_ph", "b_p", "W_hh", "W_hx", "b_h"):
        torch.testing.assert_close(manual[name], getattr(model, name).grad, msg=name)
