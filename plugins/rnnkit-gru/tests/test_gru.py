from __future__ import annotations

import pytest
import torch

rnnkit_gru = pytest.importorskip("rnnkit_gru")

from rnnkit.testing import check_model  # noqa: E402


def test_gru_matches_torch_gru_on_copied_weights():
    torch.manual_seed(0)
    layer = rnnkit_gru.GRULayer(5, 7).double()
    ref = torch.nn.GRU(5, 7, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.W_x)
        ref.weight_hh_l0.copy_(layer.W_h)
        ref.bias_ih_l0.copy_(layer.b_x)
        ref.bias_hh_l0.copy_(layer.b_h)
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    h0 = torch.randn(3, 7, dtype=torch.float64)
    out, h = layer(x, h0)
    out_ref, h_ref = ref(x, h0[None])
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h, h_ref[0])
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(layer.W_x.grad, ref.weight_ih_l0.grad)
    torch.testing.assert_close(layer.W_h.grad, ref.weight_hh_l0.grad)
    torch.testing.assert_close(layer.b_h.grad, ref.bias_hh_l0.grad)


@pytest.mark.parametrize("name", ["gru", "chargru"])
def test_contract(name):
    check_model(name)
