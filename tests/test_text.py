"""Corpus loading, the vocabulary, and the text task's batches and evaluation."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from rnnkit.data import text as text_module
from rnnkit.data.text import (
    TextConfig,
    Vocabulary,
    christie_text,
    clean_text,
    is_christie,
    load_corpus,
    read_text_file,
    strip_gutenberg,
)
from rnnkit.data.text_task import TextTask
from rnnkit.errors import RunError, UsageError
from rnnkit.task import EvalBudget
from tests.helpers import SHARED_DATA, small_text


def test_clean_text_drops_bom_and_crlf():
    assert clean_text("\ufeffab\r\ncd\re") == "ab\ncd\ne"


def test_read_text_file_errors(tmp_path):
    with pytest.raises(RunError, match="not found"):
        read_text_file(tmp_path / "missing.txt")
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(RunError, match="binary"):
        read_text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(RunError, match="not UTF-8"):
        read_text_file(latin)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffhello\r\nworld".encode())
    assert read_text_file(bom) == "hello\nworld"


def test_empty_and_short_corpora(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(RunError, match="empty"):
        load_corpus(TextConfig(text=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("just a few words " * 5)
    with pytest.raises(RunError, match="at least"):
        load_corpus(TextConfig(text=str(short)))
    with pytest.raises(UsageError, match="unknown corpus"):
        load_corpus(TextConfig(corpus="dickens"))


def test_strip_gutenberg():
    book = (
        "header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nProduced by Y\n\nBody text.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence"
    )
    assert strip_gutenberg(book) == "Body text.\n"


@pytest.mark.skipif(not (SHARED_DATA / "books" / "christie_styles.txt").is_file(), reason="no shared data")
def test_christie_from_data_dir():
    text = christie_text(SHARED_DATA)
    assert text.startswith("The Mysterious Affair at Styles")
    assert "*** START" not in text and "Project Gutenberg" not in text[-3000:]
    assert "\r" not in text and is_christie(text)


def test_christie_offline_without_a_copy_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(text_module.urllib.request, "urlopen", offline)
    with pytest.raises(RunError) as info:
        christie_text(tmp_path / "nothing-here")
    message = str(info.value)
    assert "--text" in message and "--data-dir" in message and "\n" not in message


def test_christie_rejects_another_book(tmp_path):
    (tmp_path / "christie_styles.txt").write_text("Pride and Prejudice\n" * 100)
    with pytest.raises(RunError, match="not The Mysterious Affair"):
        christie_text(tmp_path)


def test_vocabulary_is_stable_and_round_trips():
    vocab = Vocabulary.from_text("hello world")
    assert vocab.chars == sorted(set("hello world"))
    assert vocab.decode(vocab.encode("low")) == "low"
    assert vocab.unknown("hello?!?") == ["?", "!"]


def test_batches_are_shifted_windows(tmp_path):
    task = TextTask(TextConfig(text=str(small_text(tmp_path)), seq_len=12), torch.device("cpu"), seed=0)
    x, y = task.train_batch(8)
    assert x.shape == y.shape == (8, 12)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert task.dims == {"vocab_size": len(task.vocab)}
    assert len(task.val_data) == pytest.approx(0.1 * (len(task.train_data) + len(task.val_data)), abs=1)


def test_evaluation_reports_bits_per_character(tmp_path):
    from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig

    task = TextTask(TextConfig(text=str(small_text(tmp_path)), seq_len=10), torch.device("cpu"), seed=0)
    model = CharLSTM(len(task.vocab), CharLSTMConfig(embedding_size=8, hidden_size=8, layers=1))
    metrics = task.evaluate(model, EvalBudget(batch_size=4, batches=1))
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / 0.6931471805599453)
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics["loss"] == pytest.approx(torch.log(torch.tensor(float(len(task.vocab)))).item(), rel=0.1)
