"""Which torch device a run uses: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from rnnkit.errors import RunError, UsageError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    """The device ``requested`` names; UsageError for another name, RunError for CUDA where there is none."""
    if requested not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, got '{requested}'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available here (use --device cpu)")
    return torch.device(requested)
