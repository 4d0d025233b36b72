"""`rnnkit inspect`: the states a character model shows (``inspect_states``), the properties of a text
and their correlations, a unit that learns "inside brackets" on a synthetic text, the HTML page (in a
real headless Chromium when one is installed) and the command's errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from html import unescape

import numpy as np
import pytest
import torch

from rnnkit.data.text import Vocabulary
from rnnkit.errors import UsageError
from rnnkit.inspection import (
    Passage,
    after_sentence_end,
    inside_brackets,
    inside_quotes,
    inside_word,
    inspect_text,
    line_position,
    pearson,
    read_passage,
)
from rnnkit.inspection_page import render_page
from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig
from rnnkit.testing import bracket_text
from tests.helpers import assert_one_line_error, run

CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")

PASSAGE = (
    "“Poirot,” I said, “you old villain!”\n"
    "He smiled. (He always did.) The clock struck ten.\n"
    "We were sitting in the library, and the fire burned low.\n"
) * 8


# -- properties and correlation -------------------------------------------------------------------


def test_properties_are_the_state_after_reading_each_character():
    text = "a “b c” d. (e) f"
    assert inside_quotes(text) == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert inside_quotes('x "y" z') == [0, 0, 1, 1, 0, 0, 0]
    assert inside_brackets("a (b (c) d) e") == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert after_sentence_end("Hi.” So") == [0, 0, 1, 1, 1, 0, 0]
    assert inside_word("don’t go") == [1, 1, 1, 1, 1, 0, 1, 1]
    assert line_position("ab\nabcd") == [0.25, 0.5, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_pearson_is_numpys_and_undefined_for_what_does_not_vary():
    torch.manual_seed(0)
    values = torch.rand(50, 4)
    values[:, 3] = 0.5  # a unit that never moves
    prop = (torch.rand(50) > 0.5).float()
    r = pearson(values, prop)
    for u in range(3):
        assert r[u].item() == pytest.approx(np.corrcoef(values[:, u].numpy(), prop.numpy())[0, 1], abs=1e-6)
    assert torch.isnan(r[3])
    assert torch.isnan(pearson(values, torch.ones(50))).all()


# -- the states a model shows ---------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "impl"), [("torch", "fused"), ("scratch", "fused"), ("scratch", "autograd")])
def test_charlstm_states_are_the_ones_forward_computes(backend, impl):
    """The last layer's h through the head gives forward's logits; the last tanh(c) is tanh of the state
    forward returns; gates lie in [0, 1] — from a state forward returned, too."""
    torch.manual_seed(0)
    config = CharLSTMConfig(embedding_size=8, hidden_size=6, layers=2, backend=backend, scratch_impl=impl)
    model = CharLSTM(11, config).eval()
    tokens = torch.randint(0, 11, (3, 9))  # (batch, seq)
    with torch.no_grad():
        _, prefix = model(tokens[:, :4])
        logits, (h, c) = model(tokens[:, 4:], prefix)  # (batch, 5, vocab)
        states = model.inspect_states(tokens[:, 4:], prefix)
    assert list(states) == ["cell", "hidden", "input_gate", "forget_gate", "output_gate"]
    assert all(tuple(v.shape) == (5, 3, 2, 6) for v in states.values())  # (seq, batch, layers, hidden)
    torch.testing.assert_close(model.head(states["hidden"][:, :, -1].transpose(0, 1)), logits)
    torch.testing.assert_close(states["cell"][-1].transpose(0, 1), c.tanh())
    torch.testing.assert_close(states["hidden"][-1].transpose(0, 1), h)
    for gate in ("input_gate", "forget_gate", "output_gate"):
        assert 0 <= states[gate].min() and states[gate].max() <= 1


class _OutOfRangeLSTM(CharLSTM):
    def inspect_states(self, tokens, state=None):
        states = super().inspect_states(tokens, state)
        return {**states, "cell": states["cell"] * 3}


class _ForgetfulLSTM(CharLSTM):
    def inspect_states(self, tokens, state=None):
        return super().inspect_states(tokens)  # ignores the state it is given


@pytest.mark.parametrize(
    ("model_class", "message"),
    [
        (_OutOfRangeLSTM, r"broken: inspect_states\(\)\['cell'\] has values outside \[-1, 1\]"),
        (_ForgetfulLSTM, r"broken: inspect_states\(\)\['cell'\] from a state forward returned differs"),
    ],
    ids=["out-of-range", "ignores-the-state"],
)
def test_the_checker_catches_broken_states(model_class, message):
    from rnnkit.registry import ModelDef, Registry
    from rnnkit.testing import check_model

    registry = Registry()
    registry.add(
        ModelDef("broken", ("char-lm",), CharLSTMConfig, lambda config, *, vocab_size: model_class(vocab_size, config))
    )
    with pytest.raises(AssertionError, match=message):
        check_model("broken", registry)


# -- a unit that learns what only memory can tell ---------------------------------------------------


def train_tiny(model: torch.nn.Module, vocab: Vocabulary, text: str, steps: int, seq: int, seed: int) -> None:
    ids = torch.tensor(vocab.encode(text))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (16,), generator=generator).tolist()
        batch = torch.stack([ids[s : s + seq + 1] for s in starts])  # (16, seq + 1)
        logits, _ = model(batch[:, :-1])  # (16, seq, vocab)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_a_short_training_grows_an_inside_brackets_cell():
    """Over 20 seeds, 400 steps of a 16-unit LSTM gave a top cell with |r| 0.95 to 1.00 with "inside
    brackets" on held-out text; the same model untrained, 0.15 to 0.47 (0.20 with this seed)."""
    torch.manual_seed(0)
    text = bracket_text(20_000, seed=0)
    vocab = Vocabulary.from_text(text)
    model = CharLSTM(len(vocab), CharLSTMConfig(embedding_size=8, hidden_size=16, layers=1))
    held_out = bracket_text(2000, seed=1000)
    before = inspect_text(model, vocab, held_out, name="charlstm").top("cell", "inside brackets", 1)[0]
    train_tiny(model, vocab, text, steps=400, seq=64, seed=0)
    after = inspect_text(model, vocab, held_out, name="charlstm").top("cell", "inside brackets", 1)[0]
    assert abs(before.r) < 0.5, before
    assert abs(after.r) >= 0.85, after
    assert after.label == f"L1.{after.index}" and after.unit == after.index


# -- the passage ----------------------------------------------------------------------------------


def test_a_passage_is_read_from_an_offset_with_its_context(tmp_path, monkeypatch):
    path = tmp_path / "book.txt"
    path.write_bytes(("\ufeff" + "é" * 600 + "x" * 100 + "“quoted”\r\n" * 50).encode("utf-8"))
    passage = read_passage(path, chars=50, offset=700)
    assert passage.text.startswith("“quoted”\n“quoted”") and len(passage.text) == 50
    assert passage.context == "é" * 400 + "x" * 100 and passage.offset == 700
    assert len(read_passage(path, chars=20_000).text) == 600 + 100 + 9 * 50  # the whole file, CRLF as LF
    monkeypatch.setattr("rnnkit.inspection.READ_CHUNK_CHARS", 7)  # decoded 7 characters at a time
    assert read_passage(path, chars=50, offset=700) == passage
    assert read_passage(path, chars=10, offset=709) == Passage(
        "“quoted”\n“", passage.context[9:] + "“quoted”\n", 709, str(path)
    )
    with pytest.raises(UsageError, match="past the end of .* \\(1,150 characters\\)"):
        read_passage(path, offset=5000)
    with pytest.raises(UsageError, match="--chars must be between 10 and 20,000"):
        read_passage(path, chars=20_001)


def test_the_passage_keeps_its_context_for_quotes_and_for_the_state():
    """A passage that starts inside a quotation knows it (the context's opening quote counts), and its
    first states are those of a model that has read the context."""
    torch.manual_seed(0)
    text = "“abc def. ghi” jk (lm) no. “pq”"
    vocab = Vocabulary.from_text(text)
    model = CharLSTM(len(vocab), CharLSTMConfig(embedding_size=4, hidden_size=5, layers=2)).eval()
    inspection = inspect_text(model, vocab, Passage(text[4:], context=text[:4]))
    assert inspection.text.startswith(" def. ghi”")
    assert inspection.properties["inside quotes"][:10].tolist() == [1.0] * 9 + [0.0]
    whole = inspect_text(model, vocab, text)
    for name, values in inspection.states.items():
        torch.testing.assert_close(values, whole.states[name][4:])


def test_unknown_characters_are_refused_or_left_out():
    vocab = Vocabulary(list("abc “”"))
    model = CharLSTM(len(vocab), CharLSTMConfig(embedding_size=4, hidden_size=5, layers=1))
    with pytest.raises(UsageError, match="'€'.*--drop-unknown"):
        inspect_text(model, vocab, "abc € cab “abc” ba")
    inspection = inspect_text(model, vocab, 'abc € cab "abc" ba', drop_unknown=True)
    assert inspection.text == "abc  cab “abc” ba" and inspection.dropped == ["€"]  # keyboard quotes become the book's


# -- the page -------------------------------------------------------------------------------------


def _tiny_inspection(text: str = PASSAGE):
    torch.manual_seed(0)
    vocab = Vocabulary.from_text(text)
    model = CharLSTM(len(vocab), CharLSTMConfig(embedding_size=4, hidden_size=8, layers=2))
    return inspect_text(model, vocab, text, name="charlstm")


def test_the_page_is_self_contained_and_escapes_the_text():
    evil = "He wrote </script><script>document.title='pwned'</script> & <b>bold</b> “quoted” <!-- x"
    inspection = _tiny_inspection(evil * 3)
    page = render_page(inspection, source="runs/<x>", top=3, units=[15])
    assert "<script>document.title" not in page and "<b>bold</b>" not in page and "<!-- x" not in page
    assert "&lt;/script&gt;&lt;script&gt;document.title" in page  # the text shown before the script runs
    assert page.count("<script") == 2 and "runs/&lt;x&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert "default-src 'none'" in page
    data = json.loads(re.search(r'id="inspection-data">(.*?)</script>', page, re.S).group(1))
    assert data["text"] == inspection.text and data["units"] == 8
    cell = data["states"][0]
    assert cell["name"] == "cell" and "15" in cell["units"] and cell["why"]["15"] == "asked for"
    assert len(page) < 120_000


def test_a_unit_that_does_not_exist_is_refused():
    with pytest.raises(UsageError, match="--unit 16 does not exist: the model has 16 units"):
        render_page(_tiny_inspection(), units=[16])


def _chromium(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={cwd / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@needs_chromium
def test_the_page_renders_in_a_real_browser(tmp_path):
    """Chromium runs the page's script: one coloured span per character, the text as text (an injected
    script does not run), the tables, and a screenshot that is not blank."""
    from PIL import Image

    text = PASSAGE + "<script>document.title='pwned'</script>"
    inspection = _tiny_inspection(text)
    page = tmp_path / "page.html"
    page.write_text(render_page(inspection, source="tiny", units=[3]), encoding="utf-8")
    dom = _chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-ready="1"' in html, html[-2000:]  # the script ran to its end
    assert "pwned" not in html.split("</title>")[0]
    spans = re.findall(r'<span data-i="(\d+)" style="background-color: rgb\((\d+), (\d+), (\d+)\);', html)
    assert len(spans) == len(inspection.text)
    assert len({s[1:] for s in spans}) > 10  # coloured by value, not one colour
    shown = re.search(r'<pre id="passage">(.*?)</pre>', html, re.S).group(1)
    assert unescape(re.sub(r"<[^>]*>", "", shown)) == inspection.text  # the text as text, tags and all
    assert "<script>document" not in html
    assert html.count('class="unit"') >= 4 and '<option value="cell">cell</option>' in html

    # the address chooses the state, the unit and the property underlined
    chosen = _chromium("--dump-dom", page.as_uri() + "#state=forget_gate&unit=3&prop=inside%20quotes", cwd=tmp_path)
    assert "<b>forget_gate</b>" in chosen.stdout and "<b>unit L1.3</b>" in chosen.stdout
    assert re.search(r'<table class="top" data-state="forget_gate">', chosen.stdout)  # shown, not hidden
    underlined = re.findall(r'<span data-i="(\d+)" style="[^"]*box-shadow', chosen.stdout)
    quoted = [i for i, v in enumerate(inspection.properties["inside quotes"].tolist()) if v > 0]
    assert [int(i) for i in underlined] == quoted

    shot = tmp_path / "shot.png"
    result = _chromium("--window-size=1000,900", f"--screenshot={shot}", page.as_uri(), cwd=tmp_path)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    r, b, low = pixels[..., 0], pixels[..., 2], pixels.min(axis=2)
    tinted = ((abs(r - b) > 30) & (low > 120)).sum()  # light reds and blues: the passage's background
    assert pixels.std() > 10 and tinted > 20_000, tinted  # the legend alone has under 3,000


# -- the command ----------------------------------------------------------------------------------


def test_inspect_the_shipped_model(tmp_path):
    text = tmp_path / "passage.txt"
    text.write_text(PASSAGE, encoding="utf-8")
    out = tmp_path / "page.html"
    result = run("inspect", "--text", str(text), "--out", str(out), "--top", "3")
    assert result.exit_code == 0, result.output
    assert "inside quotes" in result.stdout and f"page: {out}" in result.stdout
    assert re.search(r"after a sentence end\s+│ L\d\.\d+ [+-]0\.\d\d", result.stdout)
    page = out.read_text(encoding="utf-8")
    assert "the shipped Christie model" in page and "What charlstm" in page

    result = run("inspect", "--text", str(text), "--out", str(out), "--json", "--chars", "100", "--offset", "10")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "charlstm" and report["chars"] == 100 and report["offset"] == 10
    assert report["states"] == ["cell", "hidden", "input_gate", "forget_gate", "output_gate"]
    assert report["layers"] == 2 and report["units_per_layer"] == 128
    words = report["top"]["cell"]["inside a word"]
    assert len(words) == 5 and all(-1 <= u["r"] <= 1 for u in words)
    assert (
        abs(words[0]["r"]) >= abs(words[-1]["r"]) and words[0]["label"] == f"L{words[0]['layer']}.{words[0]['index']}"
    )


@pytest.mark.parametrize(
    ("make", "args", "code", "words"),
    [
        (lambda p: p.write_bytes(b""), [], 1, ["is empty"]),
        (lambda p: p.write_bytes(b"abc \xff\xfe def" * 5), [], 1, ["not UTF-8"]),
        (lambda p: p.write_bytes(bytes(range(256))), [], 1, ["binary"]),
        (lambda p: p.write_text("Poirot € said " * 3), [], 2, ["'€'", "--drop-unknown"]),
        (lambda p: p.write_text(PASSAGE), ["--chars", "5"], 2, ["--chars must be between 10"]),
        (lambda p: p.write_text(PASSAGE), ["--offset", "100000"], 2, ["past the end"]),
        (lambda p: p.write_text(PASSAGE), ["--top", "0"], 2, ["--top must be between 1 and 20"]),
        (lambda p: p.write_text(PASSAGE), ["--unit", "256"], 2, ["--unit 256 does not exist"]),
    ],
    ids=["empty", "not-utf8", "binary", "unknown", "chars", "offset", "top", "unit"],
)
def test_bad_input_is_one_line(tmp_path, make, args, code, words):
    path = tmp_path / "text.txt"
    make(path)
    result = run("inspect", "--text", str(path), "--out", str(tmp_path / "page.html"), *args)
    assert_one_line_error(result, code, *words)
    assert not (tmp_path / "page.html").exists()


def test_a_model_that_does_not_show_its_states_is_one_line(tmp_path, monkeypatch):
    import rnnkit.language_model

    class Opaque(torch.nn.Module):
        """A char-lm model without inspect_states."""

        def __init__(self, vocab_size: int) -> None:
            super().__init__()
            self.inner = CharLSTM(vocab_size, CharLSTMConfig(embedding_size=4, hidden_size=4, layers=1))

        def forward(self, tokens, state=None):
            return self.inner(tokens, state)

    vocab = Vocabulary.from_text(PASSAGE)
    monkeypatch.setattr(
        rnnkit.language_model,
        "load_language_model",
        lambda checkpoint=None, **_: (Opaque(len(vocab)), vocab, {"model": "opaque"}),
    )
    text = tmp_path / "passage.txt"
    text.write_text(PASSAGE, encoding="utf-8")
    result = run("inspect", "--text", str(text), "--out", str(tmp_path / "page.html"))
    assert_one_line_error(result, 2, "model 'opaque' does not show its states", "inspect_states")
