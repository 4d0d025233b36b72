"""Encoded corpora (rnnkit.data.corpus): ids in the smallest dtype, equal to the list encoding; the cache
reused, invalidated by content, and never trusted when damaged (faults injected); an unwritable cache
still trains; batches equal the list-encoded task's for a seed; ``train.eval_chars`` caps evaluation."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import corpus
from rnnkit.data.corpus import dtype_for, encode_file, encode_text, load_encoded
from rnnkit.data.text import TextConfig, Vocabulary, load_corpus, read_text_file
from rnnkit.data.text_task import TextTask
from rnnkit.errors import RnnkitWarning, RunError
from rnnkit.language_model import pretrained_path
from rnnkit.models.charlstm import CharLSTM, CharLSTMConfig
from rnnkit.task import EvalBudget
from tests.helpers import SHARED_DATA, SMALL_TEXT, run, small_text

CPU = torch.device("cpu")
BOOK = SHARED_DATA / "books" / "christie_styles.txt"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches under its own folder, and caches even small files, so the cache path is the one
    exercised (production skips the cache for files under CACHE_MIN_BYTES)."""
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(tmp_path / "rnnkit-cache"))
    monkeypatch.setattr(corpus, "CACHE_MIN_BYTES", 0)
    return tmp_path / "rnnkit-cache" / "corpora"


def entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def write(tmp_path, text: str | bytes, name: str = "corpus.txt"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# -- the dtype and the encoding -------------------------------------------------------------------------


def test_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert dtype_for(1) == dtype_for(256) == np.uint8
    assert dtype_for(257) == dtype_for(65_536) == np.uint16
    assert dtype_for(65_537) == np.uint32


@pytest.mark.parametrize(("symbols", "dtype"), [(200, np.uint8), (300, np.uint16), (70_000, np.uint32)])
def test_a_file_is_stored_in_that_dtype(tmp_path, symbols, dtype):
    points = [p for p in range(0x20, 0x20 + symbols + 2048) if not 0xD800 <= p < 0xE000][:symbols]
    text = "".join(map(chr, points)) * 2
    data = encode_file(write(tmp_path, text), tmp_path / "cache").data
    assert data.dtype == dtype and len(data) == len(text)
    assert data.tolist() == Vocabulary.from_text(text).encode(text)


def test_encode_text_equals_the_list_encoding():
    text = SMALL_TEXT + "café — “quoted” 𝄞\n"
    vocab = Vocabulary.from_text(text)
    ids = encode_text(text, vocab)
    assert ids.dtype == np.uint8 and ids.tolist() == vocab.encode(text)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode_text("caféX", Vocabulary.from_text("café"))


@pytest.mark.skipif(not BOOK.is_file(), reason="no shared data")
def test_the_book_encodes_as_before_and_keeps_the_shipped_vocabulary(tmp_path):
    text = read_text_file(BOOK)
    vocab = Vocabulary.from_text(text)
    assert encode_file(BOOK, tmp_path).data.tolist() == vocab.encode(text)
    shipped = json.loads((pretrained_path() / "meta.json").read_text(encoding="utf-8"))["vocabulary"]
    assert load_encoded(TextConfig(data_dir=str(SHARED_DATA))).vocab.chars == shipped


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab\r\n é€𝄞\ufeff")), min_size=0, max_size=80),
    chunk=st.integers(1, 9),
)
def test_streaming_equals_reading_whole_at_any_chunk_size(tmp_path_factory, text, chunk):
    """BOM, CRLF / CR split across chunks and characters cut between chunks clean as clean_text does."""
    path = write(tmp_path_factory.mktemp("s"), text)
    expected = read_text_file(path)
    original = corpus.CHUNK_BYTES
    corpus.CHUNK_BYTES = chunk
    try:
        vocab, count, _ = corpus._scan(path)
        assert vocab.chars == sorted(set(expected)) and count == len(expected)
        if expected:
            assert corpus._encode_in_memory(path, vocab, count, corpus._hash_file(path)).tolist() == vocab.encode(
                expected
            )
    finally:
        corpus.CHUNK_BYTES = original


def test_bad_bytes_are_the_same_errors_as_reading_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 64)
    latin = write(tmp_path, b"plain text " * 20 + "caf\xe9".encode("latin-1"), "latin.txt")
    with pytest.raises(RunError) as whole:
        read_text_file(latin)
    with pytest.raises(RunError) as streamed:
        encode_file(latin, None)
    assert str(streamed.value) == str(whole.value) and "byte 223" in str(whole.value)
    with pytest.raises(RunError, match="binary"):
        encode_file(write(tmp_path, bytes(range(256)) * 10, "x.bin"), None)
    with pytest.raises(RunError, match="not found"):
        encode_file(tmp_path / "missing.txt", None)


def test_empty_and_short_corpora_fail_as_before(tmp_path):
    with pytest.raises(RunError, match="empty"):
        load_encoded(TextConfig(text=str(write(tmp_path, " \n\t\n" * 50))))
    with pytest.raises(RunError, match="at least"):
        load_encoded(TextConfig(text=str(write(tmp_path, "just a few words " * 5))))


# -- the cache ------------------------------------------------------------------------------------------


def test_the_cache_is_reused_and_memory_mapped(tmp_path, monkeypatch, _private_cache):
    path = small_text(tmp_path)
    first = load_encoded(TextConfig(text=str(path)))
    assert isinstance(first.data, np.memmap) and first.cache_file.parent == _private_cache
    assert len(entries(_private_cache)) == 2  # <key>.ids and <key>.json, nothing left over

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again although the cache holds it")

    monkeypatch.setattr(corpus, "_scan", no_encoding)
    again = load_encoded(TextConfig(text=str(path)))
    assert isinstance(again.data, np.memmap) and again.cache_file == first.cache_file
    assert again.vocab.chars == first.vocab.chars and np.array_equal(again.data, first.data)


def test_changed_content_is_a_new_entry(tmp_path, _private_cache):
    path = small_text(tmp_path)
    before = load_encoded(TextConfig(text=str(path)))
    path.write_text(SMALL_TEXT * 29 + "A new ending, with new letters: XYZ.\n", encoding="utf-8")
    after = load_encoded(TextConfig(text=str(path)))
    assert after.cache_file != before.cache_file and len(entries(_private_cache)) == 4
    assert "X" in after.vocab.chars and after.data.tolist() == after.vocab.encode(read_text_file(path))


def damage_truncate(ids, header):
    ids.write_bytes(ids.read_bytes()[:-7])


def damage_flip_a_byte(ids, header):
    data = bytearray(ids.read_bytes())
    data[100] ^= 1  # same size, still ids of the vocabulary: only the checksum can tell
    ids.write_bytes(bytes(data))


def damage_header_garbage(ids, header):
    header.write_bytes(b'{"format": "rnnkit-corpus-1", "sha2')


def damage_header_lies_about_length(ids, header):
    meta = json.loads(header.read_text(encoding="utf-8"))
    header.write_text(json.dumps({**meta, "chars": meta["chars"] * 2}), encoding="utf-8")


def damage_no_header(ids, header):
    header.unlink()  # a crash between the two renames


@pytest.mark.parametrize(
    "damage",
    [damage_truncate, damage_flip_a_byte, damage_header_garbage, damage_header_lies_about_length, damage_no_header],
)
def test_a_damaged_entry_is_detected_and_rebuilt_not_trusted(tmp_path, damage, _private_cache):
    path = small_text(tmp_path)
    good = load_encoded(TextConfig(text=str(path)))
    expected = np.array(good.data)
    ids = good.cache_file
    del good
    damage(ids, ids.with_suffix(".json"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = load_encoded(TextConfig(text=str(path)))
    assert np.array_equal(rebuilt.data, expected)
    if damage is not damage_no_header:
        assert any(issubclass(w.category, RnnkitWarning) and "damaged" in str(w.message) for w in caught)
    # and the rebuilt entry is whole again: reused without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(load_encoded(TextConfig(text=str(path))).data, expected)


def test_a_crash_while_writing_leaves_no_entry(tmp_path, monkeypatch, _private_cache):
    path = small_text(tmp_path)
    real = corpus._encode_pass

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # killed after the ids were written, before the rename

    monkeypatch.setattr(corpus, "_encode_pass", crash)
    with pytest.raises(KeyboardInterrupt):
        load_encoded(TextConfig(text=str(path)))
    assert entries(_private_cache) == []  # no entry and no temporary file
    monkeypatch.setattr(corpus, "_encode_pass", real)
    assert load_encoded(TextConfig(text=str(path))).cache_file is not None


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path, _private_cache):
    _private_cache.mkdir(parents=True)
    stale, fresh = _private_cache / ".x.ids.abc.tmp", _private_cache / ".y.ids.def.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(stale, (0, 0))
    load_encoded(TextConfig(text=str(small_text(tmp_path))))
    assert not stale.exists() and fresh.exists()


def test_an_unwritable_cache_warns_and_keeps_the_ids_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(blocker / "cache"))  # mkdir fails: a file is in the way
    path = small_text(tmp_path)
    with pytest.warns(RnnkitWarning, match="cannot be written"):
        task = TextTask(TextConfig(text=str(path), seq_len=12), CPU, seed=0)
    assert task.corpus_file is None and not isinstance(task.train_data.base, np.memmap)
    x, y = task.train_batch(4)
    assert x.shape == (4, 12) and torch.equal(x[:, 1:], y[:, :-1])


def test_an_in_memory_corpus_too_big_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "available_memory_bytes", lambda: 1000)

    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before checking the size")

    monkeypatch.setattr(corpus.np, "empty", no_allocation)
    with pytest.raises(RunError, match="needs .* GiB in memory"):
        encode_file(small_text(tmp_path), None)


def test_a_full_disk_falls_back_to_memory(tmp_path, monkeypatch):
    class Usage:
        free = 10

    monkeypatch.setattr(corpus.shutil, "disk_usage", lambda path: Usage())
    with pytest.warns(RnnkitWarning, match="bytes free"):
        encoded = encode_file(small_text(tmp_path), tmp_path / "cache")
    assert encoded.cache_file is None and len(encoded.data) == len(SMALL_TEXT) * 30


def test_small_files_are_not_cached_by_default(tmp_path, monkeypatch, _private_cache):
    monkeypatch.setattr(corpus, "CACHE_MIN_BYTES", 1 << 18)
    encoded = load_encoded(TextConfig(text=str(small_text(tmp_path))))
    assert encoded.cache_file is None and entries(_private_cache) == []


# -- the task: batches and evaluation ---------------------------------------------------------------------


def old_batches(text: str, seq: int, seed: int, batch: int, steps: int) -> list[torch.Tensor]:
    """The batches of rnnkit before the encoded corpus: a list encoding into int64, gathered by torch."""
    vocab = Vocabulary.from_text(text)
    data = torch.tensor(vocab.encode(text), dtype=torch.long)
    train = data[: int(len(data) * 0.9)]
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        starts = torch.randint(0, len(train) - seq, (batch,), generator=generator)
        out.append(train[starts[:, None] + torch.arange(seq + 1)])
    return out


@pytest.mark.parametrize("cached", [True, False])
def test_batches_for_a_seed_are_the_same_as_before(tmp_path, monkeypatch, cached):
    if not cached:
        monkeypatch.setattr(corpus, "CACHE_MIN_BYTES", 1 << 30)
    path = small_text(tmp_path)
    task = TextTask(TextConfig(text=str(path), seq_len=16), CPU, seed=3)
    assert (task.corpus_file is not None) == cached
    for windows in old_batches(load_corpus(TextConfig(text=str(path))), 16, 3, 8, 5):
        x, y = task.train_batch(8)
        assert x.dtype == y.dtype == torch.long
        assert torch.equal(x, windows[:, :-1]) and torch.equal(y, windows[:, 1:])


def old_evaluate(task: TextTask, model: torch.nn.Module, streams_wanted: int) -> dict[str, float]:
    """The evaluation before ``eval_chars``: the whole held-out text."""
    val = torch.from_numpy(task.val_data.astype(np.int64))
    seq = task.config.seq_len
    streams = max(1, min(streams_wanted, (len(val) - 1) // seq))
    per_stream = (len(val) - 1) // streams
    data = val[: streams * per_stream + 1]
    inputs, targets = data[:-1].view(streams, per_stream), data[1:].view(streams, per_stream)
    state, total = None, 0.0
    with torch.no_grad():
        for start in range(0, per_stream, seq):
            logits, state = model(inputs[:, start : start + seq], state)
            total += F.cross_entropy(logits.flatten(0, 1), targets[:, start : start + seq].flatten(), reduction="sum")
    return {"loss": float(total) / inputs.numel(), "chars": inputs.numel()}


def test_eval_chars_caps_evaluation_and_zero_uses_everything(tmp_path):
    task = TextTask(TextConfig(text=str(small_text(tmp_path, repeat=60)), seq_len=10), CPU, seed=0)
    torch.manual_seed(0)
    model = CharLSTM(len(task.vocab), CharLSTMConfig(embedding_size=8, hidden_size=8, layers=1))
    held_out = len(task.val_data)
    everything = task.evaluate(model, EvalBudget(batch_size=4, batches=1, chars=0))
    before = old_evaluate(task, model, 4)
    assert everything["chars"] == before["chars"] == (held_out - 1) // 4 * 4
    assert everything["loss"] == pytest.approx(before["loss"], rel=1e-6)
    assert task.evaluate(model, EvalBudget(4, 1, chars=10 * held_out)) == everything
    capped = task.evaluate(model, EvalBudget(batch_size=4, batches=1, chars=401))
    assert capped["chars"] == 400 and capped["bpc"] == pytest.approx(capped["loss"] / math.log(2))
    assert capped["loss"] != pytest.approx(everything["loss"], rel=1e-9)
    assert task.evaluate(model, EvalBudget(4, 1, chars=1))["chars"] == 10  # at least one window


def test_train_on_a_small_text_end_to_end(tmp_path, _private_cache):
    path = small_text(tmp_path)
    args = ["model.embedding_size=8", "model.hidden_size=16", "train.max_steps=20", "train.batch_size=8"]
    args += ["train.eval_every=10", "train.eval_chars=300", "task.seq_len=16", "--device", "cpu", "--no-progress"]
    result = run("train", "examples/christie.yaml", f"task.text={path}", *args, "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "validation bpc" in result.stdout and len(entries(_private_cache)) == 2
    records = [json.loads(line) for line in (tmp_path / "runs" / "christie" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_bpc" in r]
    assert [r["step"] for r in evals] == [10, 20] and all(r["eval_chars"] == 296 for r in evals)
    meta = json.loads((tmp_path / "runs" / "christie" / "meta.json").read_text())
    assert meta["final_metrics"]["chars"] == 296 and meta["val_chars"] == len(SMALL_TEXT) * 30 - int(
        len(SMALL_TEXT) * 30 * 0.9
    )
