"""Typed errors: library code raises these, the CLI turns each into one line and an exit code."""

from __future__ import annotations


class RnnkitError(Exception):
    """Base of every error rnnkit reports to a user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(RnnkitError):
    """The user asked for something invalid (bad option, bad spec, unknown model): exit 2."""

    exit_code = 2


class SpecError(UsageError):
    """A run spec or an override is malformed, has an unknown key or a value of the wrong type."""


class ModelNotFoundError(UsageError):
    """No registered model has the requested name."""


class KindNotSupportedError(UsageError):
    """The model does not declare the model kind it was asked to be (``rnnkit.kinds``)."""


#: The name of KindNotSupportedError in rnnkit 0.1, kept so ``except TaskNotSupportedError`` still works.
TaskNotSupportedError = KindNotSupportedError


class RunError(RnnkitError):
    """Something failed while running (missing file, corrupt checkpoint, unwritable directory): exit 1."""


class CheckpointError(RunError):
    """A checkpoint is missing, incomplete or does not match what was asked of it."""


class RunLockedError(RunError):
    """Another live process owns the run directory (it holds the directory's lock)."""


class RnnkitWarning(UserWarning):
    """Something a user should know that does not stop the work; the CLI shows it as one line."""
