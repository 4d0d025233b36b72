"""Sampling from a character language model: size limits, temperature / top-k sampling, and
generation that feeds the prompt once and carries the model's state, so every new character costs
the same (one step of the model), however long the text grows.

A model may declare a faster one-step function for generation (``Steppable``, see docs/plugins.md);
otherwise each step calls the model's forward on one character with the carried state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from rnnkit.data.text import Vocabulary
from rnnkit.errors import UsageError

#: Temperatures below this sample greedily: the limit of softmax(logits / T) as T -> 0, without overflow.
GREEDY_BELOW = 1e-3

#: Most characters one sample may have, samples in one batch, and prompt characters; and the most
#: characters one call may process in all (samples x (prompt + length)). A million characters of
#: sampling is minutes on a CPU; these bound what a typo can ask for, not what is useful.
MAX_LENGTH = 1_000_000
MAX_NUM = 10_000
MAX_PROMPT_CHARS = 1_000_000
MAX_TOTAL_CHARS = 20_000_000
#: The prompt is fed in chunks of at most this many characters (x samples), carrying the state, so a
#: long prompt never needs logits for all of its characters at once.
PROMPT_CHUNK_TOKENS = 65536


#: One step of generation: ``step(ids, state) -> (logits, state)``; ids (batch,) int64, logits
#: (batch, vocab), and the model's own state (opaque to rnnkit) in and out.
Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@runtime_checkable
class Steppable(Protocol):
    """A char-lm model that declares a fast one-step function for generation (optional).

    ``stepper()`` returns ``step(ids, state) -> (logits, state)``: ``ids`` (batch,) int64, ``logits``
    (batch, vocab), and ``state`` whatever the model's forward returns and accepts (a tensor, a
    tuple), opaque to rnnkit: ``step`` takes a state that forward or an earlier step returned and
    returns the next one, never changing one in place (nor does rnnkit). One step must give what
    ``model(ids[:, None], state)`` gives, faster. rnnkit builds the function once per generation
    call, after the weights are final, and calls it under ``torch.inference_mode()``.
    ``rnnkit.testing.check_model`` checks a stepper against the model's forward.
    """

    def stepper(self) -> Step: ...


def forward_step(model: torch.nn.Module) -> Step:
    """The step of a model without a stepper: its forward on one character with the carried state."""

    def step(ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = model(ids[:, None], state)  # (batch, 1, vocab)
        return logits[:, -1], state  # (batch, vocab)

    return step


def model_step(model: torch.nn.Module) -> Step:
    """The model's own stepper if it declares one (``Steppable``), else ``forward_step``."""
    return model.stepper() if isinstance(model, Steppable) else forward_step(model)


def check_sizes(*, length: int, num: int = 1, prompt_chars: int = 0) -> None:
    """Raise UsageError for a length, a number of samples or a prompt out of range (no model needed)."""
    if length < 1 or length > MAX_LENGTH:
        raise UsageError(f"--length must be at least 1 and at most {MAX_LENGTH:,}, got {length:,}")
    if num < 1 or num > MAX_NUM:
        raise UsageError(f"--num must be at least 1 and at most {MAX_NUM:,}, got {num:,}")
    if prompt_chars > MAX_PROMPT_CHARS:
        raise UsageError(f"the prompt has {prompt_chars:,} characters, over the {MAX_PROMPT_CHARS:,} allowed")
    if num * (prompt_chars + length) > MAX_TOTAL_CHARS:
        raise UsageError(
            f"--num {num:,} x (prompt {prompt_chars:,} + --length {length:,}) characters is over the "
            f"{MAX_TOTAL_CHARS:,} one call may process; lower --num or --length"
        )


def check_sampling(
    vocab: Vocabulary, *, length: int, temperature: float, top_k: int, num: int = 1, prompt_chars: int = 0
) -> None:
    """Raise UsageError for options out of range (see ``check_sizes``), a temperature that is negative
    or not finite, or a top-k over the vocabulary size."""
    check_sizes(length=length, num=num, prompt_chars=prompt_chars)
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature must be 0 (greedy) or a finite positive number, got {temperature}")
    if top_k < 0 or top_k > len(vocab):
        raise UsageError(f"--top-k must be between 0 (off) and the vocabulary size {len(vocab)}, got {top_k:,}")


def typographic_quotes(vocab: Vocabulary, text: str) -> str:
    """``text`` with ASCII quotes turned into the curly ones when only those are in the vocabulary
    (Gutenberg books use ’ and “ ”, keyboards type ' and ")."""
    if "'" not in vocab.index and "’" in vocab.index:
        text = text.replace("'", "’")
    if '"' not in vocab.index and "“" in vocab.index and "”" in vocab.index:
        parts = text.split('"')
        text = "".join(part + ("“" if i % 2 == 0 else "”") for i, part in enumerate(parts[:-1])) + parts[-1]
    return text


def prompt_ids(vocab: Vocabulary, prompt: str, *, drop_unknown: bool = False) -> tuple[list[int], list[str]]:
    """The prompt as ids; unknown characters raise, or are dropped and returned when ``drop_unknown``."""
    prompt = typographic_quotes(vocab, prompt)
    unknown = vocab.unknown(prompt)
    if unknown and not drop_unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise UsageError(
            f"the prompt has characters the model does not know: {shown} (use --drop-unknown to drop them)"
        )
    return vocab.encode("".join(c for c in prompt if c in vocab.index)), unknown


def next_ids(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, vocab) logits -> (batch,) ids: argmax at temperature 0, else softmax(logits / T) sampling."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(-1)
    if top_k:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (batch, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float() * (1.0 / temperature), dim=-1)  # softmax shifts by the max itself
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def generate_ids(
    model: torch.nn.Module,
    vocab: Vocabulary,
    *,
    prompt: str | list[int],
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    num: int = 1,
    seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the ids chosen at each of ``length`` steps, a (num,) tensor per step, as they are chosen.

    The prompt is fed once (in chunks, the state carried); after that each step feeds only the last
    character with the carried state (through the model's stepper if it has one, see ``Steppable``),
    so the cost is linear in ``length``. The model is in eval mode while the generator runs and back
    in its own mode once it is exhausted or closed. Gradients are off for each step, but not between
    steps (the caller's code runs as it would anyway).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    ids = vocab.encode(prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
        ids = vocab.encode("\n") if "\n" in vocab.index else [0]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            chunk = max(1, PROMPT_CHUNK_TOKENS // num)
            state: Any = None
            for begin in range(0, len(ids), chunk):
                tokens = torch.tensor(ids[begin : begin + chunk], device=device).expand(num, -1)  # (num, chunk)
                # (num, chunk, vocab); the model's own state, carried as it is
                logits, state = model(tokens) if state is None else model(tokens, state)
            last = logits[:, -1]  # (num, vocab)
            step = model_step(model)

        for t in range(length):
            with torch.inference_mode():
                nxt = next_ids(last, temperature, top_k, generator)  # (num,)
                if t + 1 < length:
                    last, state = step(nxt, state)  # (num, vocab), the next state
            yield nxt
    finally:
        model.train(was_training)


def generate_stream(
    model: torch.nn.Module,
    vocab: Vocabulary,
    *,
    prompt: str | list[int],
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    num: int = 1,
    seed: int | None = None,
) -> Iterator[list[str]]:
    """Like ``generate``, but yield the ``num`` characters of each step (one per sample) as they come."""
    chars = vocab.chars
    for nxt in generate_ids(
        model, vocab, prompt=prompt, length=length, temperature=temperature, top_k=top_k, num=num, seed=seed
    ):
        yield [chars[i] for i in nxt.tolist()]


def generate(
    model: torch.nn.Module,
    vocab: Vocabulary,
    *,
    prompt: str | list[int],
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    num: int = 1,
    seed: int | None = None,
) -> list[str]:
    """``num`` continuations of ``prompt`` (generated as one batch), ``length`` characters each.

    The prompt is fed once; after that each step feeds only the last character with the carried
    state, so the cost is linear in ``length``. ``generate_stream`` yields the same text as it comes.
    """
    chosen = list(
        generate_ids(
            model, vocab, prompt=prompt, length=length, temperature=temperature, top_k=top_k, num=num, seed=seed
        )
    )
    out = torch.stack(chosen, dim=1)  # (num, length)
    return [vocab.decode(row) for row in out.tolist()]
