"""What the units of a character language model respond to: their states over a passage, correlated
with simple properties of its text (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks").

A passage is read from a UTF-8 file (at most ``MAX_CHARS`` characters, from an offset, with up to
``CONTEXT_CHARS`` characters before it fed first so that the model is not cold at its start); the
model shows every step's states through ``inspect_states`` (``rnnkit.kinds.StateInspectable``); each
unit of each state is correlated (Pearson, over the characters of the passage) with each property in
``PROPERTIES``. A property's value at character t, like a state's, is the one after reading t.
``rnnkit.inspection_page`` draws the result as an HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.text import Vocabulary, check_text_path
from rnnkit.errors import RunError, UsageError
from rnnkit.kinds import StateInspectable
from rnnkit.sampling import typographic_quotes

#: Characters of a passage by default, and the most one inspection takes (each character's states are
#: kept for every unit, and the page holds the shown units' values for every character).
DEFAULT_CHARS = 2000
MAX_CHARS = 20_000
#: The fewest characters a passage may have: a correlation over fewer says little.
MIN_CHARS = 10
#: Characters before the passage fed first (when the offset leaves any), so that its first states are
#: not those of a model that has read nothing.
CONTEXT_CHARS = 500
#: The farthest into a file a passage may start (characters), and how many characters are decoded at a
#: time on the way there.
MAX_OFFSET = 1_000_000_000
READ_CHUNK_CHARS = 1 << 20
#: Units listed per state and property by default, and the most.
DEFAULT_TOP = 5
MAX_TOP = 20

OPENING_QUOTES = "“"
CLOSING_QUOTES = "”"
SENTENCE_ENDS = ".!?"
#: What may follow a sentence's end before the next sentence starts: closing quotes and brackets.
AFTER_END = "”’\"')]"
OPENING_BRACKETS = "([{"
CLOSING_BRACKETS = ")]}"
APOSTROPHES = "’'"


def inside_quotes(text: str) -> list[float]:
    """1 from an opening quote (“, or a straight " when outside) up to the closing one (” or "), which
    is outside again: the state after reading each character."""
    out, inside = [], 0.0
    for ch in text:
        if ch in OPENING_QUOTES:
            inside = 1.0
        elif ch in CLOSING_QUOTES:
            inside = 0.0
        elif ch == '"':
            inside = 1.0 - inside
        out.append(inside)
    return out


def line_position(text: str) -> list[float]:
    """Characters of the line read so far (a line break: 0), over the longest line of the text: 0 to 1.
    (The scale does not change a correlation; it keeps the values comparable with the others.)"""
    out, column = [], 0
    for ch in text:
        column = 0 if ch == "\n" else column + 1
        out.append(float(column))
    longest = max(out, default=0.0) or 1.0
    return [c / longest for c in out]


def inside_word(text: str) -> list[float]:
    """1 on letters and digits, and on an apostrophe between two of them (don’t)."""
    out = []
    for i, ch in enumerate(text):
        word = ch.isalnum() or (
            ch in APOSTROPHES and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        )
        out.append(1.0 if word else 0.0)
    return out


def after_sentence_end(text: str) -> list[float]:
    """1 from a sentence's end (. ! ?) through the closing quotes, brackets and spaces after it, until
    the next sentence starts."""
    out, after = [], 0.0
    for ch in text:
        if ch in SENTENCE_ENDS:
            after = 1.0
        elif not (ch.isspace() or ch in AFTER_END):
            after = 0.0
        out.append(after)
    return out


def inside_brackets(text: str) -> list[float]:
    """1 from an opening bracket ( [ { up to the bracket that closes the outermost one (nested ones
    counted), which is outside again."""
    out, depth = [], 0
    for ch in text:
        if ch in OPENING_BRACKETS:
            depth += 1
        elif ch in CLOSING_BRACKETS:
            depth = max(0, depth - 1)
        out.append(1.0 if depth else 0.0)
    return out


#: The properties every unit is correlated with: name -> values of a text, one per character.
PROPERTIES: dict[str, Callable[[str], list[float]]] = {
    "inside quotes": inside_quotes,
    "position in line": line_position,
    "inside a word": inside_word,
    "after a sentence end": after_sentence_end,
    "inside brackets": inside_brackets,
}


def text_properties(text: str) -> dict[str, torch.Tensor]:
    """Every property of ``PROPERTIES`` over ``text``: name -> (chars,) float32."""
    return {name: torch.tensor(values(text), dtype=torch.float32) for name, values in PROPERTIES.items()}


def pearson(values: torch.Tensor, prop: torch.Tensor) -> torch.Tensor:
    """Pearson's r of each column of ``values`` (chars, units) with ``prop`` (chars,) -> (units,),
    NaN where it is undefined (a unit or a property that does not vary over the passage)."""
    x = values.double() - values.double().mean(0)  # (chars, units)
    p = prop.double() - prop.double().mean()  # (chars,)
    spread_x, spread_p = x.norm(dim=0), p.norm()  # (units,), ()
    r = (p @ x) / (spread_x * spread_p)  # (units,)
    flat = 1e-6 * math.sqrt(len(prop))  # a standard deviation under 1e-6: constant
    return r.masked_fill((spread_x <= flat) | (spread_p <= flat), float("nan")).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class Passage:
    """A passage of a text file: its ``text``, the ``context`` just before it (fed first), the character
    ``offset`` it starts at and the file it comes from."""

    text: str
    context: str = ""
    offset: int = 0
    source: str = ""


def read_passage(
    path: str | Path, *, chars: int = DEFAULT_CHARS, offset: int = 0, context: int = CONTEXT_CHARS
) -> Passage:
    """``chars`` characters of a UTF-8 file from character ``offset`` on, and up to ``context``
    characters before them (a byte-order mark dropped, CRLF and CR read as LF). The file is decoded as a
    stream up to the passage's end, keeping only the context of what comes before, so a passage deep in
    a huge file costs its own memory only."""
    if not MIN_CHARS <= chars <= MAX_CHARS:
        raise UsageError(f"--chars must be between {MIN_CHARS} and {MAX_CHARS:,}, got {chars:,}")
    if not 0 <= offset <= MAX_OFFSET:
        raise UsageError(f"--offset must be between 0 and {MAX_OFFSET:,}, got {offset:,}")
    path = check_text_path(path, "text file")
    try:
        with path.open("rb") as raw:
            head = raw.read(65536)
        if not head:
            raise RunError(f"text file {path} is empty")
        if b"\x00" in head:
            raise RunError(f"{path} looks like a binary file, not UTF-8 text")
        # newline=None: universal newlines, CRLF and CR become LF (also across the chunks read)
        with path.open("r", encoding="utf-8-sig", newline=None) as f:
            before, skipped = "", 0
            while skipped < offset:
                part = f.read(min(READ_CHUNK_CHARS, offset - skipped))
                if not part:
                    break
                skipped += len(part)
                before = (before + part)[-context:] if context else ""
            text = f.read(chars) if skipped == offset else ""
    except UnicodeDecodeError as exc:
        raise RunError(f"{path} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise RunError(f"cannot read text file {path}: {exc.strerror or exc}") from exc
    if not text:
        raise UsageError(f"--offset {offset:,} is past the end of {path} ({skipped:,} characters)")
    return Passage(text=text, context=before, offset=offset, source=str(path))


@dataclass(frozen=True)
class UnitCorrelation:
    """One unit of one state and its correlation ``r`` with a property. ``unit`` counts over all layers
    (layer by layer); ``layer`` (from 1) and ``index`` place it in its layer."""

    state: str
    unit: int
    layer: int
    index: int
    r: float

    @property
    def label(self) -> str:
        """``L2.37``: unit 37 of layer 2."""
        return f"L{self.layer}.{self.index}"


@dataclass
class Inspection:
    """A model's states over a passage and their correlations with the passage's properties.

    ``states``: name -> (chars, layers, units), in the model's order (the first is the one shown by
    default); ``properties``: name -> (chars,); ``correlations``: state name -> (properties, layers *
    units), NaN where undefined. ``dropped``: characters of the passage the model does not know, left
    out. ``model`` names the model; ``passage`` is where the text came from.
    """

    text: str
    states: dict[str, torch.Tensor]
    properties: dict[str, torch.Tensor]
    correlations: dict[str, torch.Tensor]
    model: str = ""
    passage: Passage = field(default_factory=lambda: Passage(""))
    dropped: list[str] = field(default_factory=list)

    @property
    def layers(self) -> int:
        return next(iter(self.states.values())).shape[1]

    @property
    def units(self) -> int:
        """Units per layer."""
        return next(iter(self.states.values())).shape[2]

    def unit(self, state: str, unit: int, r: float = float("nan")) -> UnitCorrelation:
        """The unit ``unit`` (counted over all layers) of ``state``."""
        total = self.layers * self.units
        if not 0 <= unit < total:
            raise UsageError(f"--unit {unit} does not exist: the model has {total} units (0 to {total - 1})")
        return UnitCorrelation(state, unit, unit // self.units + 1, unit % self.units, r)

    def top(self, state: str, prop: str, k: int = DEFAULT_TOP) -> list[UnitCorrelation]:
        """The ``k`` units of ``state`` most correlated with ``prop`` (largest |r| first; none where the
        property does not vary over the passage)."""
        r = self.correlations[state][list(self.properties).index(prop)]  # (layers * units,)
        order = torch.argsort(r.abs().nan_to_num(-1.0), descending=True)[:k]
        return [self.unit(state, int(u), float(r[u])) for u in order.tolist() if not math.isnan(float(r[u]))]


def check_inspectable(model: Any, name: str) -> None:
    """UsageError unless ``model`` shows its states (``rnnkit.kinds.StateInspectable``)."""
    if not isinstance(model, StateInspectable):
        raise UsageError(
            f"model '{name}' does not show its states step by step (it has no inspect_states(), see "
            "rnnkit.kinds.StateInspectable), so it cannot be inspected"
        )


def inspect_text(
    model: torch.nn.Module,
    vocab: Vocabulary,
    passage: Passage | str,
    *,
    name: str = "",
    drop_unknown: bool = False,
) -> Inspection:
    """Feed ``passage`` (its context first) to ``model`` and correlate its states with the text.

    Keyboard quotes become the book's curly ones where only those are known
    (``rnnkit.sampling.typographic_quotes``); other characters the model does not know raise
    UsageError, or with ``drop_unknown`` are left out (from the context always).
    """
    check_inspectable(model, name or type(model).__name__)
    if isinstance(passage, str):
        passage = Passage(passage)
    whole = typographic_quotes(vocab, passage.context + passage.text)  # the same length: one for one
    context, text = whole[: len(passage.context)], whole[len(passage.context) :]
    unknown = vocab.unknown(text)
    if unknown and not drop_unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UsageError(f"the text has characters the model does not know: {shown} (use --drop-unknown to drop them)")
    context = "".join(c for c in context if c in vocab.index)
    text = "".join(c for c in text if c in vocab.index)
    if len(text) < MIN_CHARS:
        raise UsageError(f"the passage has {len(text)} characters the model knows; at least {MIN_CHARS} are needed")
    props = {k: v[len(context) :] for k, v in text_properties(context + text).items()}  # each (chars,)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            tokens = torch.tensor([vocab.encode(text)], device=device)  # (1, chars)
            if context:
                _, state = model(torch.tensor([vocab.encode(context)], device=device))
                raw = model.inspect_states(tokens, state)  # type: ignore[attr-defined]
            else:
                raw = model.inspect_states(tokens)  # type: ignore[attr-defined]
    finally:
        model.train(was_training)
    states = _states(raw, len(text), name)
    correlations = {
        key: torch.stack([pearson(value.flatten(1), p) for p in props.values()])  # (properties, layers*units)
        for key, value in states.items()
    }
    return Inspection(text, states, props, correlations, name, passage, unknown if drop_unknown else [])


def _states(raw: Any, chars: int, name: str) -> dict[str, torch.Tensor]:
    """The states a model returned, batch dropped: name -> (chars, layers, units) float32 on the CPU;
    RunError if they break the contract."""
    if not isinstance(raw, dict) or not raw:
        raise RunError(f"model '{name}': inspect_states() returned no dict of states")
    states = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or tuple(value.shape[:2]) != (chars, 1):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise RunError(
                f"model '{name}': inspect_states()['{key}'] is {shape}, not (seq {chars}, batch 1, layers, units)"
            )
        states[str(key)] = value[:, 0].float().cpu()  # (chars, layers, units)
    if len({tuple(v.shape) for v in states.values()}) != 1:
        raise RunError(f"model '{name}': inspect_states() gave states of different shapes")
    return states
