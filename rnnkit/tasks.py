"""The built-in data tasks by name: what a spec's ``task.name`` selects.

Tasks are part of rnnkit (models are the plugin point). Each is a ``rnnkit.task.Task`` subclass that
names its config dataclass and the model kind its models must be.
"""

from __future__ import annotations

from rnnkit.data.epidemic_task import EpidemicTask
from rnnkit.data.graph_task import GraphTask
from rnnkit.data.palindrome import PalindromeTask
from rnnkit.data.text_task import TextTask
from rnnkit.task import Task

TASK_TYPES: dict[str, type[Task]] = {task.name: task for task in (PalindromeTask, TextTask, GraphTask, EpidemicTask)}
