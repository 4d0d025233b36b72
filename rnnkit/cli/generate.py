"""`rnnkit sample CHECKPOINT` and `rnnkit complete "Poirot said"`"""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli.common import handle_errors, warn

DEVICE_HELP = "auto, cpu or cuda (default: cpu; a GPU-trained checkpoint samples on the CPU)."


def _load(checkpoint: Path | None, backend: str | None, device: str):  # noqa: ANN202
    from rnnkit.generate import load_language_model
    from rnnkit.runner import resolve_device

    return load_language_model(checkpoint, backend=backend, device=str(resolve_device(device)))


def _prompt(vocab: object, text: str, drop_unknown: bool) -> list[int]:
    from rnnkit.generate import prompt_ids

    ids, dropped = prompt_ids(vocab, text, drop_unknown=drop_unknown)  # type: ignore[arg-type]
    if dropped:
        warn(f"dropped characters the model does not know: {', '.join(repr(c) for c in dropped)}")
    return ids


@handle_errors
def sample(
    checkpoint: Path = typer.Argument(
        None,
        help="A run directory or weights file (default: the Christie model shipped with rnnkit).",
        show_default=False,
    ),
    length: int = typer.Option(200, "--length", "-n", help="Characters to generate per sample."),
    temperature: float = typer.Option(0.5, "--temperature", "-t", help="0 is greedy (argmax); higher is wilder."),
    temperatures: str = typer.Option(
        None, help="Comma-separated temperatures, one line each (e.g. 0,0.25,0.5,1,2).", show_default=False
    ),
    top_k: int = typer.Option(0, "--top-k", help="Sample only from the K most likely characters (0: all)."),
    num: int = typer.Option(1, "--num", help="Samples to generate (as one batch)."),
    seed: int = typer.Option(None, help="Random seed for reproducible samples.", show_default=False),
    start: str = typer.Option("", "--start", help="Text to start from (default: a new line)."),
    drop_unknown: bool = typer.Option(False, "--drop-unknown", help="Drop start characters the model does not know."),
    backend: str = typer.Option(None, help="torch or scratch (default: the checkpoint's).", show_default=False),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
) -> None:
    """Generate text from a character language model; the text goes to stdout."""
    from rnnkit.errors import UsageError
    from rnnkit.generate import check_sampling, generate

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
        check_sampling(vocab, length=length, temperature=t, top_k=top_k, num=num)
    ids = _prompt(vocab, start, drop_unknown)
    start = vocab.decode(ids)
    for t in temps:
        texts = generate(model, vocab, prompt=ids, length=length, temperature=t, top_k=top_k, num=num, seed=seed)
        for text in texts:
            line = start + text
            if temperatures is not None:
                typer.echo(f"T={t:<5g} " + line.replace("\n", " "))  # the report's table: one line each
            else:
                typer.echo(line)


@handle_errors
def complete(
    prompt: str = typer.Argument(None, help='The opening to continue, e.g. "Poirot said".', show_default=False),
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="A run directory or weights file (default: the shipped Christie model).",
        show_default=False,
    ),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Read the prompt from a file.", show_default=False),
    length: int = typer.Option(70, "--length", "-n", help="Characters to add."),
    temperature: float = typer.Option(0.25, "--temperature", "-t", help="0 is greedy (argmax)."),
    top_k: int = typer.Option(0, "--top-k", help="Sample only from the K most likely characters (0: all)."),
    seed: int = typer.Option(None, help="Random seed.", show_default=False),
    drop_unknown: bool = typer.Option(False, "--drop-unknown", help="Drop prompt characters the model does not know."),
    backend: str = typer.Option(None, help="torch or scratch (default: the checkpoint's).", show_default=False),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
) -> None:
    """Continue a prompt: fed once, then (h, c) carried on, one step per new character. Text to stdout."""
    from rnnkit.data.text import clean_text, read_text_file
    from rnnkit.errors import UsageError
    from rnnkit.generate import check_sampling, generate

    if prompt_file is not None:
        if prompt is not None:
            raise UsageError("give a prompt or --prompt-file, not both")
        prompt = read_text_file(prompt_file, what="prompt file").rstrip("\n")
    if not prompt:
        raise UsageError('give a prompt to complete, e.g. rnnkit complete "Poirot said"')
    prompt = clean_text(prompt)
    model, vocab, _ = _load(checkpoint, backend, device)
    check_sampling(vocab, length=length, temperature=temperature, top_k=top_k)
    ids = _prompt(vocab, prompt, drop_unknown)
    if not ids:
        raise UsageError("nothing of the prompt is left after dropping unknown characters")
    (text,) = generate(model, vocab, prompt=ids, length=length, temperature=temperature, top_k=top_k, seed=seed)
    typer.echo(vocab.decode(ids) + text)
