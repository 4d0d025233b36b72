"""Character language model checkpoints: the shipped pretrained model, and loading a checkpoint into
a model (built through the registry), its vocabulary and its metadata.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from rnnkit.checkpoint import BEST_LINK, checkpoint_dir, load_checkpoint, load_weights
from rnnkit.config import ConfigBuilder
from rnnkit.data.text import Vocabulary
from rnnkit.errors import CheckpointError, UsageError
from rnnkit.registry import get_model

PRETRAINED = "christie"


def pretrained_path(name: str = PRETRAINED) -> Path:
    """The checkpoint directory of a model that ships inside the package."""
    return Path(str(resources.files("rnnkit") / "pretrained" / name))


def load_language_model(
    checkpoint: str | Path | None = None, *, backend: str | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, Vocabulary, dict[str, Any]]:
    """(model in eval mode, vocabulary, metadata) of a character LM checkpoint (default: the shipped one).

    ``checkpoint`` is a run directory, a weights file or None; ``backend`` overrides the one it was
    trained with (the weights are the same for both). The metadata names the model kind as
    ``model_kind`` (``model_task`` in checkpoints written before rnnkit called it a kind).
    """
    path = Path(checkpoint) if checkpoint is not None else pretrained_path()
    best = path / "best"
    if path.is_dir() and checkpoint_dir(path) is None and checkpoint_dir(path, BEST_LINK) is not None:
        path = best
    state, meta = load_checkpoint(path, device=device)
    kind = meta.get("model_kind", meta.get("model_task"))
    if kind != "char-lm":
        what = f"a {meta.get('task', '?')} checkpoint (model {meta.get('model', '?')}, kind {kind})"
        raise CheckpointError(f"{path} is {what}, not a character language model")
    vocab_chars = meta.get("vocabulary")
    if (
        not isinstance(vocab_chars, list)
        or not vocab_chars
        or not all(isinstance(c, str) and len(c) == 1 for c in vocab_chars)
        or len(set(vocab_chars)) != len(vocab_chars)
    ):
        raise CheckpointError(f"{path}: its metadata has no valid vocabulary (a list of distinct characters)")
    model_def = get_model(str(meta.get("model")), "char-lm")
    if not isinstance(meta.get("model_config") or {}, dict):
        raise CheckpointError(f"{path}: its metadata has no valid model_config")
    values = dict(meta.get("model_config") or {})
    if backend is not None:
        values["backend"] = backend
    try:
        config = ConfigBuilder(None, None).build(model_def.config, values, "model.")
    except UsageError as exc:
        if backend is not None and "backend" in str(exc):
            raise UsageError(f"--backend must be torch or scratch, got '{backend}'") from exc
        raise CheckpointError(f"{path}: {exc}") from exc
    vocab = Vocabulary(vocab_chars)
    model = model_def.build(config, vocab_size=len(vocab))
    load_weights(model, state, str(path))
    return model.to(device).eval(), vocab, meta
