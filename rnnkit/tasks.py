"""Built-in tasks: what data a run trains on, and which model task (contract) its models must declare.

Tasks are part of rnnkit (models are the plugin point). Each names its config dataclass, the model
task from ``rnnkit.registry.TASKS`` it needs, and a factory ``(config, device, seed) -> task``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskType:
    name: str
    model_task: str
    config: type
    factory: Callable[..., Any]


def task_types() -> dict[str, TaskType]:
    """Every built-in task by name (imports torch: call it only when a run is being set up)."""
    from rnnkit.data.palindrome import PalindromeConfig, PalindromeTask
    from rnnkit.data.text import TextConfig
    from rnnkit.data.text_task import TextTask

    return {
        "palindrome": TaskType("palindrome", PalindromeTask.model_task, PalindromeConfig, PalindromeTask),
        "text": TaskType("text", TextTask.model_task, TextConfig, TextTask),
    }
