"""What every task of the simulated cell is, and the registry that finds one by name.

A task is one unit: its name, the instruction the policy is given, the arms it uses, its
gymnasium id and time limit, the scene it draws from a seed, its success test and the moves
its scripted expert makes. The bringup, the simulated cell, the evaluation and the recorders
all read it from ``TASKS``. A new task is one module: a ``Task`` subclass decorated with
``@register_task``, in this package (imported by its ``__init__``) or in another package
under the entry point group ``rotvla_ros.tasks``
(``entry_points={"rotvla_ros.tasks": ["mine = my_pkg.tasks:MyTask"]}``). ROS-free.

World frame: the table top is z = 0, x points away from the robot, y to the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import gymnasium as gym
import mujoco
import numpy as np

from ..scene import vec

if TYPE_CHECKING:
    from ..moves import Move
    from ..world import SimWorld

ENTRY_POINTS = "rotvla_ros.tasks"
BLOCK_HALF = 0.02  # a 4 cm block: 3 px wide at 84 px from the head camera


@dataclass
class TaskScene:
    """A task drawn from a seed: its objects (MJCF) and where they start."""

    name: str
    instruction: str
    xml: str
    arms: tuple[str, ...]  # the arms the task uses
    positions: dict[str, np.ndarray]  # named start positions (world)


class Task:
    name = ""
    instruction = ""  # what the policy is told (the paper's wording for the paper's tasks)
    arms: tuple[str, ...] = ()  # the arms the task uses
    env_id = ""  # gymnasium's id of the task's environment (sim.env.CellEnv)
    time_limit = 30.0  # s of sim time an episode gets (about twice the expert's)

    def sample(self, rng: np.random.Generator) -> TaskScene:
        """The scene of one seed: objects placed and coloured from ``rng``."""
        raise NotImplementedError

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        raise NotImplementedError

    def initialise(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Set the start state of joints the scene cannot (a drawer's opening)."""

    def moves(self, world: SimWorld) -> list[Move]:
        """The scripted expert's moves from where the objects are now, in order (arms take
        turns); the expert leaves out those already done."""
        raise NotImplementedError(f"task {self.name!r} has no scripted expert")


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: the task, under its ``name``, for every tool that takes ``--task``."""
    if not (cls.name and cls.instruction and cls.arms and cls.env_id):
        raise ValueError(f"{cls.__name__} must give its name, instruction, arms and env_id")
    known = TASKS.get(cls.name)
    if known is not None and type(known) is not cls:
        raise ValueError(f"task {cls.name!r} is already {type(known).__name__}")
    TASKS[cls.name] = cls()
    if cls.env_id not in gym.registry:
        gym.register(id=cls.env_id, entry_point="rotvla_ros.sim.env:CellEnv", kwargs={"task": cls.name})
    return cls


def register_installed_tasks() -> None:
    """Tasks that other packages install under the entry point group ``rotvla_ros.tasks``."""
    for entry in entry_points(group=ENTRY_POINTS):
        if entry.name not in TASKS:
            register_task(entry.load())


def jitter_colour(rng: np.random.Generator, rgb, amount: float = 0.08) -> str:
    """An RGBA attribute: ``rgb`` moved by up to ``amount`` per channel."""
    colour = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 1)
    return vec(np.r_[colour, 1.0])


def block_xml(name: str, position, rgba: str) -> str:
    """A free 4 cm cube."""
    return (
        f'<body name="{name}" pos="{vec(position)}"><freejoint name="{name}"/>'
        f'<geom type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" rgba="{rgba}" mass="0.04" '
        f'friction="1.5 0.02 0.002" condim="4"/></body>'
    )
