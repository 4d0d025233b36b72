from __future__ import annotations

import json

import pytest
import torch

rnnkit_gru = pytest.importorskip("rnnkit_gru")

from rnnkit.testing import bracket_text, check_model  # noqa: E402


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


def test_chargru_shows_its_hidden_state_and_gates():
    """inspect_states: h_t first (a GRU has no cell state), then z, r and n; the last layer's h through
    the head gives forward's logits, the last step's h is the state forward returns."""
    torch.manual_seed(0)
    model = rnnkit_gru.CharGRU(11, rnnkit_gru.CharGRUConfig(embedding_size=5, hidden_size=6, layers=2)).eval()
    tokens = torch.randint(0, 11, (3, 8))  # (batch, seq)
    with torch.no_grad():
        _, prefix = model(tokens[:, :3])
        logits, h = model(tokens[:, 3:], prefix)
        states = model.inspect_states(tokens[:, 3:], prefix)
    assert list(states) == ["hidden", "update_gate", "reset_gate", "candidate"]
    assert all(tuple(v.shape) == (5, 3, 2, 6) for v in states.values())  # (seq, batch, layers, hidden)
    torch.testing.assert_close(model.head(states["hidden"][:, :, -1].transpose(0, 1)), logits)
    torch.testing.assert_close(states["hidden"][-1].transpose(0, 1), h)
    assert 0 <= states["update_gate"].min() and states["reset_gate"].max() <= 1


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_short_training_grows_an_inside_brackets_unit_in_the_hidden_state(one_thread, tmp_path):
    """Over 20 seeds, 300 steps of a 16-unit GRU gave a top hidden unit with |r| 0.90 to 1.00 with
    "inside brackets" on held-out text (0.91 with this seed); untrained, 0.12 to 0.41. The page says
    that it shows h_t."""
    from rnnkit.data.text import Vocabulary
    from rnnkit.inspection import inspect_text
    from rnnkit.inspection_page import render_page

    torch.manual_seed(1)
    text = bracket_text(20_000, seed=1)
    vocab = Vocabulary.from_text(text)
    model = rnnkit_gru.CharGRU(len(vocab), rnnkit_gru.CharGRUConfig(embedding_size=8, hidden_size=16, layers=1))
    held_out = bracket_text(2000, seed=1001)
    before = inspect_text(model, vocab, held_out, name="chargru").top("hidden", "inside brackets", 1)[0]
    ids = torch.tensor(vocab.encode(text))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        starts = torch.randint(0, len(ids) - 49, (16,), generator=generator).tolist()
        batch = torch.stack([ids[s : s + 49] for s in starts])  # (16, 49)
        logits, _ = model(batch[:, :-1])  # (16, 48, vocab)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inspection = inspect_text(model, vocab, held_out, name="chargru")
    after = inspection.top("hidden", "inside brackets", 1)[0]
    assert abs(before.r) < 0.5, before
    assert abs(after.r) >= 0.85, after
    page = render_page(inspection)
    assert "This model has no cell state" in page and "shows hidden first" in page
    assert page.index('<option value="hidden">') < page.index('<option value="update_gate">')

    # the same through the command line, from a checkpoint of the run
    from typer.testing import CliRunner

    from rnnkit.checkpoint import CHECKPOINT_LINK, checkpoint_files, publish
    from rnnkit.cli import app

    meta = {
        "model": "chargru",
        "model_kind": "char-lm",
        "vocabulary": vocab.chars,
        "model_config": {"hidden_size": 16, "embedding_size": 8, "layers": 1},
    }
    (tmp_path / "run").mkdir()
    publish(tmp_path / "run", CHECKPOINT_LINK, checkpoint_files(model.state_dict(), meta))
    (tmp_path / "held_out.txt").write_text(held_out, encoding="utf-8")
    args = [
        "inspect",
        str(tmp_path / "run"),
        "--text",
        str(tmp_path / "held_out.txt"),
        "--out",
        str(tmp_path / "p.html"),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "chargru" and report["states"] == ["hidden", "update_gate", "reset_gate", "candidate"]
    assert report["top"]["hidden"]["inside brackets"][0]["r"] == pytest.approx(after.r, abs=1e-6)
    assert "This model has no cell state" in (tmp_path / "p.html").read_text(encoding="utf-8")
