"""The command line as a person at a terminal meets it: what the terminal shows during training (in a
real pseudo-terminal), Ctrl-C, --help, shell completion, stdin, samples, --json, piped tables, and the
example specs shipped inside the package."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rnnkit.cli import app
from tests.helpers import assert_one_line_error, run, small_text

TINY_LM = [
    "model.embedding_size=8",
    "model.hidden_size=16",
    "train.batch_size=8",
    "task.seq_len=16",
    "train.log_every=10",
    "--device",
    "cpu",
]
TINY_PALINDROME = [
    "train.max_steps=10",
    "train.batch_size=16",
    "train.log_every=5",
    "train.eval_batches=1",
    "model.hidden_size=8",
    "task.length=5",
    "--device",
    "cpu",
]


# -- a real terminal ------------------------------------------------------------------------------


def screen(raw: str, cols: int) -> list[str]:
    """What a terminal of ``cols`` columns shows after ``raw``: printable characters (wrapping at the
    last column), CR, LF, erase-line and cursor moves replayed; colours and modes ignored."""
    lines: list[list[str]] = [[]]
    row = col = 0
    pending_wrap = False
    escape = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            m = escape.match(raw, i)
            if m:
                arg, cmd = m.groups()
                n = int(arg) if arg.isdigit() else 1
                if cmd == "A":
                    row = max(0, row - n)
                elif cmd == "B":
                    row += n
                elif cmd == "C":
                    col = min(cols - 1, col + n)
                elif cmd == "D":
                    col = max(0, col - n)
                elif cmd == "G":
                    col = n - 1
                elif cmd == "K":
                    while len(lines) <= row:
                        lines.append([])
                    lines[row] = [] if arg == "2" else lines[row][:col]
                pending_wrap = False
                i = m.end()
                continue
        elif ch == "\r":
            col, pending_wrap = 0, False
        elif ch == "\n":
            row, col, pending_wrap = row + 1, 0, False
        elif ch >= " ":
            if pending_wrap:
                row, col, pending_wrap = row + 1, 0, False
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
            if col >= cols:
                col, pending_wrap = cols - 1, True
        while len(lines) <= row:
            lines.append([])
        i += 1
    return ["".join(line).rstrip() for line in lines]


def run_in_terminal(code: str, cols: int = 80, timeout: float = 300) -> tuple[int, str, list[str]]:
    """Run ``python -c code`` with stderr (and stdin) on a pseudo-terminal of ``cols`` columns; returns
    the exit code, stdout (a pipe) and the terminal's screen."""
    pty = pytest.importorskip("pty")
    import fcntl
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env.update(TERM="xterm-256color", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    raw, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end closed
                    break
                if not chunk:
                    break
                raw += chunk
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode()
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, out, screen(raw.decode("utf-8", errors="replace"), cols)


def test_samples_and_warnings_print_above_the_bar_in_a_terminal(tmp_path):
    """In a terminal each training sample and each warning is a line of its own above the progress bar,
    and the bar is drawn once (not left behind, glued to a sample, at every print)."""
    corpus = small_text(tmp_path)
    argv = [
        "rnnkit",
        "train",
        "examples/christie.yaml",
        f"task.text={corpus}",
        *TINY_LM,
        "train.max_steps=30",
        "train.sample_every=10",
        "train.eval_every=10",
        "--out-dir",
        str(tmp_path),
    ]
    code = (
        "import sys, warnings\n"
        "from rnnkit.errors import RnnkitWarning\n"
        "from rnnkit.progress import TrainingReport\n"
        "shown = TrainingReport.on_sample\n"
        "def on_sample(self, step, text):\n"
        "    warnings.warn(f'a warning at step {step}', RnnkitWarning)\n"
        "    shown(self, step, text)\n"
        "TrainingReport.on_sample = on_sample\n"
        f"sys.argv = {argv!r}\n"
        "from rnnkit.cli import main\n"
        "main()\n"
    )
    code_, out, lines = run_in_terminal(code, cols=80)
    shown = "\n".join(lines)
    assert code_ == 0, shown
    assert "max_steps after 30 steps" in out
    for step in (10, 20, 30):
        samples = [line for line in lines if line.startswith(f"Step {step}/30: ")]
        warned = [line for line in lines if line.startswith(f"warning: a warning at step {step}")]
        assert len(samples) == 1 and len(warned) == 1, shown
        assert "━" not in samples[0] and "━" not in warned[0], shown
    bars = [line for line in lines if "━" in line]
    assert len(bars) == 1, shown  # the final bar, once
    assert bars[0].startswith("christie") and "30/30" in bars[0]
    assert "elapsed" in bars[0] and "left" in bars[0]  # both time columns labelled
    assert any("val loss" in line and "bpc" in line for line in lines), shown  # validation on the bar


def test_ctrl_c_says_how_to_resume_the_run(tmp_path, monkeypatch):
    from rnnkit.training import Trainer

    real_step, calls = Trainer.train_step, []

    def step_then_ctrl_c(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    out_dir = tmp_path / "my runs"
    args = ["examples/palindrome-lstm.yaml", *TINY_PALINDROME, "--out-dir", str(out_dir), "--no-progress"]
    result = run("train", *args)
    assert result.exit_code == 130, result.output
    run_dir = out_dir / "palindrome-lstm"
    line = result.stderr.strip().splitlines()[-1]
    assert "interrupted at step 2" in line and "Traceback" not in result.output
    resume = f"rnnkit train --resume {shlex.quote(str(run_dir))}"
    assert line.endswith(f"Resume with: {resume}"), line
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = run(*shlex.split(resume)[1:], "--no-progress")  # the command as printed
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "meta.json").read_text())["steps"] == 10


def test_the_bar_knows_validation_and_whether_the_run_may_stop_early():
    from rich.progress import Progress

    from rnnkit.progress import LabelledRemaining, TrainingProgress, evaluation_text, may_stop_early
    from rnnkit.spec import TrainConfig

    assert evaluation_text({"loss": 1.5, "accuracy": 0.5, "bpc": 2.164, "chars": 10}) == "val loss 1.5000 bpc 2.164"
    assert evaluation_text({"loss": 0.25, "accuracy": 0.875}) == "val loss 0.2500 acc 0.875"
    cfg = TrainConfig()
    assert may_stop_early(cfg)  # early stop at 0.995 and the plateau rule by default
    cfg.early_stop.threshold, cfg.plateau.patience = 0, 0
    assert not may_stop_early(cfg)
    assert TrainingProgress(100, "run", enabled=False, stops_early=may_stop_early(cfg)).stops_early is False

    progress = Progress()
    may_stop = progress.add_task("a", total=100, completed=10, stops_early=True)
    runs_out = progress.add_task("b", total=100, completed=10, stops_early=False)
    column = LabelledRemaining()
    assert column.render(progress.tasks[may_stop]).plain.startswith("left ≤")
    assert (
        column.render(progress.tasks[runs_out]).plain.startswith("left ")
        and "≤" not in column.render(progress.tasks[runs_out]).plain
    )


# -- --help, completion, the bare command ---------------------------------------------------------

COMMANDS = [
    ["train"],
    ["sweep"],
    ["plot"],
    ["sample"],
    ["complete"],
    ["inspect"],
    ["gcn"],
    ["models"],
    ["examples"],
    ["examples", "copy"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_flags_as_flags_and_ends_with_examples(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    heading = lines.index("Examples")
    examples = lines[heading + 1 :]
    assert 2 <= len(examples) <= 3 and all(e.startswith(f"rnnkit {command[0]}") or "rnnkit" in e for e in examples)


def test_help_shows_the_defaults_and_groups_long_option_lists(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    sweep = run("sweep", "--help").output
    assert "[default: 1]" in sweep and "[default: runs/<sweep name>]" in sweep and "Sweep directory ." not in sweep
    assert "What to sweep" in sweep and "Where the runs go" in sweep
    gcn = run("gcn", "--help").output
    for default in ("cora", "dense,pyg", "2", "16", "0.5", "0.01", "5e-4", "200", "10", "auto"):
        assert f"[default: {default}]" in gcn, default
    assert "Graph" in gcn and "Model and training" in gcn
    root = run("--help").output
    assert "--install-completion" in root and "--show-completion" in root and "examples" in root


def test_bare_rnnkit_prints_the_help_without_an_error_line():
    result = run()
    assert "Usage" in result.output and "Commands" in result.output
    assert not any(line.strip().startswith("error") for line in result.output.splitlines())


def test_shell_completion():
    base = [sys.executable, "-m", "rnnkit"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("_RNNKIT")}
    script = subprocess.run([*base, "--show-completion", "bash"], capture_output=True, text=True, env=env, timeout=60)
    assert script.returncode == 0 and "_RNNKIT_COMPLETE=complete_bash" in script.stdout
    completing = {**env, "_RNNKIT_COMPLETE": "complete_bash", "COMP_WORDS": "rnnkit tr", "COMP_CWORD": "1"}
    words = subprocess.run(base, capture_output=True, text=True, env=completing, timeout=60)
    assert words.stdout.split() == ["train"]
    completing.update(COMP_WORDS="rnnkit examples copy palindrome-l", COMP_CWORD="3")
    names = subprocess.run(base, capture_output=True, text=True, env=completing, timeout=60)
    assert names.stdout.split() == ["palindrome-lstm"]


# -- stdin, samples, --json, piped tables ---------------------------------------------------------


def test_complete_reads_the_prompt_from_stdin():
    args = ["-t", "0", "-n", "20"]
    given = run("complete", "Poirot said", *args)
    assert given.exit_code == 0, given.output
    runner = CliRunner()
    dashed = runner.invoke(app, ["complete", "-", *args], input="Poirot said\n")
    piped = runner.invoke(app, ["complete", *args], input="Poirot said\n")
    assert dashed.exit_code == 0 and piped.exit_code == 0, (dashed.output, piped.output)
    assert dashed.stdout == given.stdout == piped.stdout
    assert_one_line_error(runner.invoke(app, ["complete", "-"], input=""), 2, "give a prompt")
    assert_one_line_error(runner.invoke(app, ["complete", "-"], input=b"\xff\xfe\x00"), 2, "stdin")


def test_sample_writes_json_lines():
    from rnnkit.language_model import load_language_model
    from rnnkit.sampling import generate

    model, vocab, _ = load_language_model()
    texts = generate(model, vocab, prompt="", length=40, temperature=1.0, num=3, seed=9)
    as_json = run("sample", "--length", "40", "--num", "3", "--seed", "9", "--temperature", "1", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["text"] for r in records] == texts and [r["sample"] for r in records] == [0, 1, 2]
    assert {r["temperature"] for r in records} == {1.0} and {r["seed"] for r in records} == {9}


def test_train_and_sweep_json_summaries(tmp_path):
    trained = run("train", "examples/palindrome-lstm.yaml", *TINY_PALINDROME, "--out-dir", str(tmp_path), "--json")
    assert trained.exit_code == 0, trained.output
    record = json.loads(trained.stdout)
    assert record["run_dir"] == str(tmp_path / "palindrome-lstm") and record["steps"] == 10
    assert record["status"] in ("max_steps", "solved", "plateau") and "final_accuracy" in record

    out = tmp_path / "sweep"
    args = ["--lengths", "4-5", "--workers", "1", "--out", str(out), "--no-progress", "--json"]
    settings = ["train.max_steps=5", "model.hidden_size=8", "train.batch_size=16", "device=cpu"]
    swept = run("sweep", *args, *[a for s in settings for a in ("-s", s)])
    assert swept.exit_code == 0, swept.output
    summary = json.loads(swept.stdout)  # one JSON document, no table
    assert summary["results"] == str(out / "results.csv") and Path(summary["figure"]).is_file()
    assert summary["keys"] == ["model", "length"] and len(summary["runs"]) == 4
    assert {(s["model"], s["length"]) for s in summary["summary"]} == {(m, n) for m in ("rnn", "lstm") for n in (4, 5)}
    assert all(s["n"] == 1 and 0 <= s["best_accuracy_mean"] <= 1 for s in summary["summary"])


def test_gcn_takes_lr_dropout_weight_decay_and_json(tmp_path):
    out = tmp_path / "gcn"
    args = ["--dataset", "karate", "--impl", "dense", "--runs", "1", "--epochs", "3", "--device", "cpu"]
    options = ["--lr", "0.05", "--dropout", "0.1", "--weight-decay", "0", "--no-progress", "--json"]
    result = run("gcn", *args, *options, "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["results_file"] == str(out / "results.json") and summary["results"][0]["impl"] == "dense"
    assert summary["spec"]["lr"] == 0.05 and summary["spec"]["dropout"] == 0.1 and summary["spec"]["weight_decay"] == 0
    config = yaml.safe_load((out / "dense-s0" / "config.yaml").read_text())
    assert config["train"]["lr"] == 0.05 and config["train"]["weight_decay"] == 0
    assert config["model"]["dropout"] == 0.1
    assert_one_line_error(run("gcn", *args, "--dropout", "1.5", "--out", str(out)), 2, "dropout")


def test_a_piped_table_is_not_cut_to_80_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = run("models")  # stdout is not a terminal here
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "charlstm" in line)
    assert "backend=torch" in row and len(row) > 80  # the whole config on the model's own line


# -- the examples shipped inside the package ------------------------------------------------------


def test_examples_list_and_copy(tmp_path):
    listed = run("examples")
    assert listed.exit_code == 0, listed.output
    for name in ("christie", "palindrome-lstm", "gcn-cora", "sweep-palindrome"):
        assert name in listed.stdout
    rows = {r["name"]: r for r in json.loads(run("examples", "--json").stdout)}
    assert rows["christie"]["description"].startswith("A character LSTM")
    assert rows["sweep-palindrome"]["command"] == "sweep"
    assert Path(rows["christie"]["path"]).read_text() == Path("examples/christie.yaml").read_text()

    copied = run("examples", "copy", "christie", str(tmp_path))
    assert copied.exit_code == 0, copied.output
    target = tmp_path / "christie.yaml"
    assert target.read_text() == Path("examples/christie.yaml").read_text()
    target.write_text("mine\n")
    assert_one_line_error(run("examples", "copy", "christie", str(tmp_path)), 2, "already exists", "--force")
    assert target.read_text() == "mine\n"
    assert run("examples", "copy", "christie", str(tmp_path), "--force").exit_code == 0
    assert target.read_text() == Path("examples/christie.yaml").read_text()
    named = tmp_path / "my-run.yaml"
    assert run("examples", "copy", "palindrome-lstm.yaml", str(named)).exit_code == 0 and named.is_file()
    assert run("examples", "copy", "gcn-cora", "-").stdout == Path("examples/gcn-cora.yaml").read_text()
    assert_one_line_error(run("examples", "copy", "cristie", str(tmp_path)), 2, "Did you mean 'christie'")
    assert not list(tmp_path.glob(".*.tmp"))


def test_train_text_without_a_spec_uses_the_shipped_character_model(tmp_path):
    corpus = small_text(tmp_path)
    result = run(
        "train", "--text", str(corpus), "train.max_steps=5", *TINY_LM, "--out-dir", str(tmp_path), "--no-progress"
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / corpus.stem  # named after the text
    assert result.stdout.startswith(f"{run_dir}: max_steps after 5 steps") and "validation bpc" in result.stdout
    assert "shipped example christie" in result.stderr
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "charlstm" and config["train"]["optimizer"] == "adam"
    assert config["task"]["text"] == str(corpus) and config["model"]["hidden_size"] == 16
    assert_one_line_error(run("train"), 2, "--text")
