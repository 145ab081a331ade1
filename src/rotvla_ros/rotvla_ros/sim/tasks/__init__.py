"""The tasks of the simulated cell, one module each, found by name in ``TASKS`` (``base``: what
a task is and how a new one registers)."""

from ..bodies import body_position, body_speed
from . import block_into_drawer, block_to_plate, cup_stacking  # noqa: F401 (each registers its task)
from .base import (
    BLOCK_HALF,
    TASKS,
    Task,
    TaskScene,
    register_installed_tasks,
    register_task,
)

register_installed_tasks()
TASK_NAMES = tuple(TASKS)

__all__ = ["BLOCK_HALF", "TASKS", "TASK_NAMES", "Task", "TaskScene", "body_position", "body_speed", "register_task"]
