"""The language-model commands as a user drives them: train on a text, sample, complete, and bad input."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_one_line_error, run, small_text

LM_ARGS = [
    "model.embedding_size=8",
    "model.hidden_size=16",
    "train.max_steps=30",
    "train.batch_size=8",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.sample_every=10",
    "train.log_every=10",
    "task.seq_len=16",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    result = run("train", "examples/christie.yaml", f"task.text={small_text(tmp)}", *LM_ARGS, "--out-dir", str(tmp))
    assert result.exit_code == 0, result.output
    assert "Step 10/30: " in result.stderr  # training samples, like the reference's "Step 08K/40K: ..."
    assert "validation bpc" in result.stdout
    return tmp / "christie"


def test_run_directory(lm_run):
    meta = json.loads((lm_run / "meta.json").read_text())
    assert meta["model"] == "charlstm" and meta["steps"] == 30 and "vocabulary" in meta
    records = [json.loads(line) for line in (lm_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_bpc" in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert (lm_run / "checkpoint" / "state.pt").is_file() and (lm_run / "best" / "model.safetensors").is_file()


def test_sample_goes_to_stdout(lm_run):
    result = run("sample", str(lm_run), "--length", "50", "--num", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) >= 3
    again = run("sample", str(lm_run), "--length", "50", "--num", "3", "--seed", "1")
    assert again.stdout == result.stdout and result.stderr == ""


def test_sample_temperature_table(lm_run):
    result = run(
        "sample", str(lm_run / "checkpoint" / "model.safetensors"), "--temperatures", "0,0.5,1", "--length", "30"
    )
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 3 and lines[0].startswith("T=0 ")


def test_complete_continues_the_prompt(lm_run):
    result = run("complete", "Poirot said", "--checkpoint", str(lm_run), "--length", "40", "--seed", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout.rstrip("\n")
    assert out.startswith("Poirot said") and len(out) == len("Poirot said") + 40
    greedy = run("complete", "Poirot said", "-c", str(lm_run), "-t", "0", "-n", "40")
    assert greedy.stdout == run("complete", "Poirot said", "-c", str(lm_run), "-t", "0", "-n", "40").stdout


def test_complete_from_a_prompt_file_and_dropping_unknowns(lm_run, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Poirot said\n")
    assert run("complete", "--prompt-file", str(prompt), "-c", str(lm_run), "-n", "5").exit_code == 0
    result = run("complete", "Poirot saïd", "-c", str(lm_run), "-n", "5", "--drop-unknown")
    assert result.exit_code == 0 and "warning:" in result.stderr and "ï" in result.stderr
    assert result.stdout.startswith("Poirot sad")


def test_resume_from_the_command_line(lm_run):
    result = run("train", "--resume", str(lm_run), "train.max_steps=40", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((lm_run / "meta.json").read_text())["steps"] == 40


# -- bad input ----------------------------------------------------------------------------------


def test_missing_corpus(tmp_path):
    result = run(
        "train", "examples/christie.yaml", f"task.text={tmp_path / 'none.txt'}", *LM_ARGS, "--out-dir", str(tmp_path)
    )
    assert_one_line_error(result, 1, "corpus file not found")


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run("train", "examples/christie.yaml", f"task.text={empty}", *LM_ARGS, "--out-dir", str(tmp_path))
    assert_one_line_error(result, 1, "is empty")


def test_binary_corpus(tmp_path):
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 100)
    result = run("train", "examples/christie.yaml", f"task.text={binary}", *LM_ARGS, "--out-dir", str(tmp_path))
    assert_one_line_error(result, 1, "binary")


def test_missing_and_corrupt_checkpoints(tmp_path, lm_run):
    assert_one_line_error(run("sample", str(tmp_path / "nope")), 1, "no checkpoint")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    (broken / "meta.json").write_text((lm_run / "meta.json").read_text())
    assert_one_line_error(run("sample", str(broken)), 1, "corrupt checkpoint weights")
    (broken / "meta.json").write_text("{ not json")
    assert_one_line_error(run("complete", "Poirot", "-c", str(broken)), 1, "corrupt checkpoint metadata")


def test_checkpoint_of_another_task(tmp_path):
    result = run(
        "train",
        "examples/palindrome-lstm.yaml",
        "train.max_steps=5",
        "model.hidden_size=4",
        "--out-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--no-progress",
    )
    assert result.exit_code == 0
    assert_one_line_error(run("sample", str(tmp_path / "palindrome-lstm")), 1, "not a character language model")


@pytest.mark.parametrize(
    "args,words",
    [
        (["--temperature", "-1"], ["--temperature", "0 (greedy) or a finite positive number"]),
        (["--temperature", "nan"], ["--temperature"]),
        (["--temperatures", "0,inf"], ["--temperature"]),
        (["--backend", "cudnn"], ["--backend must be torch or scratch"]),
        (["--length", "0"], ["--length", "at least 1"]),
        (["--top-k", "500"], ["--top-k", "vocabulary size"]),
        (["--num", "0"], ["--num"]),
        (["--temperatures", "0,hot"], ["--temperatures"]),
    ],
)
def test_bad_sampling_options(lm_run, args, words):
    assert_one_line_error(run("sample", str(lm_run), *args), 2, *words)


def test_prompt_with_unknown_characters(lm_run):
    assert_one_line_error(run("complete", "Poirot said: “€”", "-c", str(lm_run)), 2, "'€'", "--drop-unknown")
    assert_one_line_error(run("complete", "-c", str(lm_run)), 2, "give a prompt")


def test_the_shipped_model_works_with_no_arguments():
    result = run("complete", "Poirot said", "--temperature", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout.rstrip("\n")
    assert out.startswith("Poirot said") and len(out) == len("Poirot said") + 70
    sampled = run("sample", "--length", "40", "--num", "2", "--seed", "0")
    assert sampled.exit_code == 0 and len(sampled.stdout.strip()) > 0


def test_shipped_model_writes_real_words():
    from tests.helpers import SHARED_DATA

    book = SHARED_DATA / "books" / "christie_styles.txt"
    if not book.is_file():
        pytest.skip("no shared data")
    import re

    known = set(re.findall(r"[a-z]+", book.read_text(encoding="utf-8").lower()))
    for temperature in ("0", "0.25"):
        text = run("complete", "Poirot said", "-t", temperature, "-n", "200", "--seed", "0").stdout
        words = re.findall(r"[a-z]+", text.lower()[len("poirot said") :])
        real = sum(w in known for w in words) / len(words)
        assert real > 0.8, (temperature, real, text)


def test_text_option_and_resume_checks(tmp_path):
    from tests.helpers import small_text

    corpus = small_text(tmp_path)
    result = run("train", "examples/christie.yaml", "--text", str(corpus), *LM_ARGS, "--out-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "christie"
    assert_one_line_error(run("train", "--resume", str(run_dir), "--no-progress"), 1, "already finished at step 30")
    assert_one_line_error(run("train", "--resume", str(run_dir), "train.max_steps=10"), 1, "already finished")
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("P", "Q"))
    result = run("train", "--resume", str(run_dir), f"task.text={other}", "train.max_steps=40", "--no-progress")
    assert_one_line_error(result, 1, "another vocabulary")
    result = run("train", "--resume", str(run_dir), "model.hidden_size=32", "train.max_steps=40", "--no-progress")
    assert_one_line_error(result, 1, "weights do not fit", "shape")


def test_ascii_quotes_become_the_books_quotes():
    result = run("complete", 'Poirot said "Mon ami', "-t", "0", "-n", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Poirot said “Mon ami")


# -- streaming and bounds -------------------------------------------------------------------------


def test_the_stream_is_the_same_text_as_the_list():
    from rnnkit.language_model import load_language_model
    from rnnkit.sampling import generate, generate_stream

    model, vocab, _ = load_language_model()
    texts = generate(model, vocab, prompt="Poirot", length=30, temperature=0.5, num=3, seed=4)
    steps = list(generate_stream(model, vocab, prompt="Poirot", length=30, temperature=0.5, num=3, seed=4))
    assert len(steps) == 30 and ["".join(s[i] for s in steps) for i in range(3)] == texts
    assert not model.training


def test_sample_prints_what_generate_returns():
    from rnnkit.language_model import load_language_model
    from rnnkit.sampling import generate

    model, vocab, _ = load_language_model()
    texts = generate(model, vocab, prompt="", length=40, temperature=1.0, num=3, seed=9)  # from a new line
    result = run("sample", "--length", "40", "--num", "3", "--seed", "9", "--temperature", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n\n".join(texts) + "\n"  # a blank line between samples


def test_a_pipe_sees_the_text_as_it_is_generated():
    import os
    import subprocess
    import sys
    import time

    argv = ["rnnkit", "sample", "-n", "1000000", "--seed", "1"]
    code = f"import sys; sys.argv = {argv!r}; from rnnkit.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        first = os.read(proc.stdout.fileno(), 100)  # a million characters would take minutes to finish
        assert first and time.monotonic() - start < 30
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["sample", "-n", "1000000000"], 2, ["--length", "1,000,000"]),
        (["sample", "--num", "20000"], 2, ["--num", "10,000"]),
        (["sample", "--seed", str(2**70)], 2, ["--seed"]),
        (["complete", "Poirot", "--seed", "-1"], 2, ["--seed"]),
        (["complete", "Poirot", "-n", "1000001"], 2, ["--length"]),
    ],
)
def test_generation_bounds(args, code, words):
    assert_one_line_error(run(*args), code, *words)


def test_a_huge_prompt_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.txt"
    with big.open("w") as f:
        f.truncate(20_000_000)  # sparse: its size is what counts
    assert_one_line_error(run("complete", "--prompt-file", str(big)), 2, "20,000,000 bytes", "1,000,000")


def test_a_long_prompt_is_fed_in_chunks(monkeypatch):
    import rnnkit.sampling as gen
    from rnnkit.language_model import load_language_model
    from rnnkit.sampling import generate

    model, vocab, _ = load_language_model()
    prompt = "Poirot said that the little grey cells would find it. " * 3
    whole = generate(model, vocab, prompt=prompt, length=20, temperature=0)
    monkeypatch.setattr(gen, "PROMPT_CHUNK_TOKENS", 16)
    assert generate(model, vocab, prompt=prompt, length=20, temperature=0) == whole
