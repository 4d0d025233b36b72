"""`rnnkit sample CHECKPOINT` and `rnnkit complete "Poirot said"`: character LM text streamed to stdout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from rnnkit.cli.common import examples_epilog, handle_errors, warn
from rnnkit.errors import UsageError

DEVICE_HELP = "auto, cpu or cuda (default: cpu; a GPU-trained checkpoint samples on the CPU)."
SAMPLING = "Sampling"
MODEL = "Model"
PROMPT = "Prompt"
SAMPLE_EXAMPLES = examples_epilog(
    "rnnkit sample --num 3 --length 120 --seed 1",
    "rnnkit sample runs/christie --temperatures 0,0.5,1 --start Poirot",
    "rnnkit sample --num 5 --json > samples.jsonl",
)
COMPLETE_EXAMPLES = examples_epilog(
    'rnnkit complete "Poirot said"',
    'rnnkit complete "It was" --checkpoint runs/christie --length 200 --temperature 0.5',
    "echo 'Hastings looked at' | rnnkit complete -",
)


def _load(checkpoint: Path | None, backend: str | None, device: str):  # noqa: ANN202
    # torch-heavy modules are imported when a command runs, so that `rnnkit --help` stays fast
    from rnnkit.device import resolve_device
    from rnnkit.language_model import load_language_model

    return load_language_model(checkpoint, backend=backend, device=str(resolve_device(device)))


def _prompt(vocab: object, text: str, drop_unknown: bool, *, required: bool = False) -> list[int]:
    from rnnkit.sampling import prompt_ids

    ids, dropped = prompt_ids(vocab, text, drop_unknown=drop_unknown)  # type: ignore[arg-type]
    if required and not ids:
        raise UsageError("nothing of the prompt is left after dropping the characters the model does not know")
    if dropped:
        warn(f"dropped characters the model does not know: {', '.join(repr(c) for c in dropped)}")
    return ids


#: Largest --prompt-file read (refused before it is read); the prompt is also at most
#: rnnkit.sampling.MAX_PROMPT_CHARS characters.
MAX_PROMPT_FILE_BYTES = 1_000_000
#: Seeds are what torch.manual_seed takes (the same bound as a run spec's ``seed``).
MAX_SEED = 2**63 - 1
#: Streamed text is flushed at least this often (seconds), so that a pipe sees it as it comes.
FLUSH_EVERY = 0.05


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced by something without isatty
        return True


def _read_stdin_prompt() -> str:
    """The prompt piped in on stdin: UTF-8, at most MAX_PROMPT_FILE_BYTES (refused beyond)."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read(MAX_PROMPT_FILE_BYTES + 1) if stream is not None else sys.stdin.read().encode("utf-8")
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise UsageError(f"the prompt on stdin is over the {MAX_PROMPT_FILE_BYTES:,} bytes allowed")
    if b"\x00" in data:
        raise UsageError("stdin looks like binary data, not a UTF-8 prompt")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the prompt on stdin is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


class _Writer:
    """Text to stdout as it is generated: written at once, flushed every FLUSH_EVERY seconds and at
    the end of each line."""

    def __init__(self) -> None:
        self.out = sys.stdout
        self.last = time.monotonic()

    def write(self, text: str, *, flush: bool = False) -> None:
        try:
            self.out.write(text)
            now = time.monotonic()
            if flush or now - self.last >= FLUSH_EVERY:
                self.out.flush()
                self.last = now
        except BrokenPipeError:
            raise
        except OSError as exc:  # e.g. stdout on a full disk: name it in the error
            if exc.filename is None:
                exc.filename = "standard output"
            raise


def _stream(writer: _Writer, model: Any, vocab: Any, *, head: str, table: bool, num: int, **options: Any) -> None:
    """Write ``num`` samples, each ``head`` and its continuation: the first as it is generated, the
    others (generated in the same batch) when it is done. In a table each sample is one line; else a
    blank line separates them (a sample may itself hold line breaks)."""
    import torch

    from rnnkit.sampling import generate_ids

    def shown(text: str) -> str:
        return text.replace("\n", " ") if table else text

    chars = vocab.chars
    rest: list[Any] = []
    writer.write(shown(head), flush=True)
    try:
        for nxt in generate_ids(model, vocab, num=num, **options):  # (num,) ids per step
            writer.write(shown(chars[int(nxt[0])]))
            if num > 1:
                rest.append(nxt[1:])
    except KeyboardInterrupt:
        writer.write("\n", flush=True)  # end the partial line before the interruption is reported
        raise
    writer.write("\n", flush=True)
    if rest:
        separator = "" if table else "\n"
        for row in torch.stack(rest, dim=1).tolist():  # (num - 1, length)
            writer.write(separator + shown(head + vocab.decode(row)) + "\n", flush=True)


def _json_lines(writer: _Writer, model: Any, vocab: Any, *, head: str, temperature: float, **options: Any) -> None:
    """One JSON object per sample: its index, temperature, seed and text (prompt included)."""
    from rnnkit.sampling import generate

    texts = generate(model, vocab, temperature=temperature, **options)
    for i, text in enumerate(texts):
        record = {"sample": i, "temperature": temperature, "seed": options.get("seed"), "text": head + text}
        writer.write(json.dumps(record, ensure_ascii=False) + "\n", flush=True)


@handle_errors
def sample(
    checkpoint: Path = typer.Argument(
        None,
        help="A run directory or weights file (default: the Christie model shipped with rnnkit).",
        show_default=False,
    ),
    length: int = typer.Option(
        200, "--length", "-n", help="Characters to generate per sample (at most 1,000,000).", rich_help_panel=SAMPLING
    ),
    temperature: float = typer.Option(
        0.5, "--temperature", "-t", help="0 is greedy (argmax); higher is wilder.", rich_help_panel=SAMPLING
    ),
    temperatures: str = typer.Option(
        None,
        help="Comma-separated temperatures, one line each (e.g. 0,0.25,0.5,1,2).",
        show_default=False,
        rich_help_panel=SAMPLING,
    ),
    top_k: int = typer.Option(
        0, "--top-k", help="Sample only from the K most likely characters (0: all).", rich_help_panel=SAMPLING
    ),
    num: int = typer.Option(
        1, "--num", help="Samples to generate (as one batch; at most 10,000).", rich_help_panel=SAMPLING
    ),
    seed: int = typer.Option(
        None,
        min=0,
        max=MAX_SEED,
        help="Random seed for reproducible samples (0 to 2^63-1).",
        show_default=False,
        rich_help_panel=SAMPLING,
    ),
    start: str = typer.Option(
        "", "--start", help="Text to start from (default: a new line).", rich_help_panel=SAMPLING
    ),
    drop_unknown: bool = typer.Option(
        False, "--drop-unknown", help="Drop start characters the model does not know.", rich_help_panel=SAMPLING
    ),
    backend: str = typer.Option(
        None, help="torch or scratch (default: the checkpoint's).", show_default=False, rich_help_panel=MODEL
    ),
    device: str = typer.Option("cpu", help=DEVICE_HELP, rich_help_panel=MODEL),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per sample (sample, temperature, seed, text) instead of plain text."
    ),
) -> None:
    """Generate text from a character language model; the text goes to stdout as it is generated.

    Several samples (--num) are separated by a blank line; --json gives one JSON line each."""
    from rnnkit.sampling import check_sampling, check_sizes

    check_sizes(length=length, num=num, prompt_chars=len(start))
    temps = [temperature]
    if temperatures is not None:
        try:
            temps = [float(t) for t in temperatures.split(",") if t.strip()]
        except ValueError:
            raise UsageError(f"--temperatures must be numbers separated by commas, got '{temperatures}'") from None
        if not temps:
            raise UsageError("--temperatures is empty")
    model, vocab, _ = _load(checkpoint, backend, device)
    for t in temps:
        check_sampling(vocab, length=length, temperature=t, top_k=top_k, num=num, prompt_chars=len(start))
    ids = _prompt(vocab, start, drop_unknown)
    start = vocab.decode(ids)
    writer = _Writer()
    for t in temps:
        options = {"prompt": ids, "length": length, "temperature": t, "top_k": top_k, "seed": seed}
        if as_json:
            _json_lines(writer, model, vocab, head=start, num=num, **options)
            continue
        table = temperatures is not None  # the report's table: one line per temperature
        head = (f"T={t:<5g} " if table else "") + start
        _stream(writer, model, vocab, head=head, table=table, num=num, **options)


@handle_errors
def complete(
    prompt: str = typer.Argument(
        None,
        help='The opening to continue, e.g. "Poirot said"; - (or nothing, with text piped in) reads it from stdin.',
        show_default=False,
    ),
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="A run directory or weights file (default: the shipped Christie model).",
        show_default=False,
        rich_help_panel=MODEL,
    ),
    prompt_file: Path = typer.Option(
        None,
        "--prompt-file",
        help="Read the prompt from a file (at most 1 MB).",
        show_default=False,
        rich_help_panel=PROMPT,
    ),
    length: int = typer.Option(
        70, "--length", "-n", help="Characters to add (at most 1,000,000).", rich_help_panel=SAMPLING
    ),
    temperature: float = typer.Option(
        0.25, "--temperature", "-t", help="0 is greedy (argmax).", rich_help_panel=SAMPLING
    ),
    top_k: int = typer.Option(
        0, "--top-k", help="Sample only from the K most likely characters (0: all).", rich_help_panel=SAMPLING
    ),
    seed: int = typer.Option(
        None, min=0, max=MAX_SEED, help="Random seed (0 to 2^63-1).", show_default=False, rich_help_panel=SAMPLING
    ),
    drop_unknown: bool = typer.Option(
        False, "--drop-unknown", help="Drop prompt characters the model does not know.", rich_help_panel=SAMPLING
    ),
    backend: str = typer.Option(
        None, help="torch or scratch (default: the checkpoint's).", show_default=False, rich_help_panel=MODEL
    ),
    device: str = typer.Option("cpu", help=DEVICE_HELP, rich_help_panel=MODEL),
) -> None:
    """Continue a prompt: fed once, then the model's state carried on; the text goes to stdout as it is generated."""
    from rnnkit.data.text import clean_text, read_text_file
    from rnnkit.sampling import check_sampling, check_sizes

    check_sizes(length=length)
    if prompt_file is not None:
        if prompt is not None:
            raise UsageError("give a prompt or --prompt-file, not both")
        prompt = read_text_file(prompt_file, what="prompt file", max_bytes=MAX_PROMPT_FILE_BYTES).rstrip("\n")
    elif prompt == "-" or (prompt is None and not _stdin_is_terminal()):
        prompt = _read_stdin_prompt().rstrip("\n")
    if not prompt:
        raise UsageError('give a prompt to complete, e.g. rnnkit complete "Poirot said"')
    prompt = clean_text(prompt)
    check_sizes(length=length, prompt_chars=len(prompt))
    model, vocab, _ = _load(checkpoint, backend, device)
    check_sampling(vocab, length=length, temperature=temperature, top_k=top_k, prompt_chars=len(prompt))
    ids = _prompt(vocab, prompt, drop_unknown, required=True)
    options = {"prompt": ids, "length": length, "temperature": temperature, "top_k": top_k, "seed": seed}
    _stream(_Writer(), model, vocab, head=vocab.decode(ids), table=False, num=1, **options)
