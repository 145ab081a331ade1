"""How the executor reaches its arms, behind one interface (ros2_control's hardware
components, in small): a *backend* builds each arm's ``ArmBackend`` and, for
``control_source: teleop``, the source of teleop targets. Backends are found by name in a
registry, as ros2_control loads hardware plugins: the built-in ones below, and any a package
registers under the entry-point group ``arx_r5_driver.backends``
(``entry_points={"arx_r5_driver.backends": ["mine = my_pkg.arms:MyBackend"]}``). A backend
module is imported only when it is chosen: ARX's SDK exists on the robot's Python only.

A backend class declares the parameters it reads (``PARAMETERS``, and per arm
``ARM_PARAMETERS`` under ``<arm>.``): name -> (default, description); the executor node
declares them and hands every value in ``BackendContext.values``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

import numpy as np

ENTRY_POINT_GROUP = "arx_r5_driver.backends"
BUILT_IN_BACKENDS = {
    "sim": "arx_r5_driver.backends.sim:SimBackend",
    "topic": "arx_r5_driver.backends.topic:TopicBackend",
    "sdk": "arx_r5_driver.backends.sdk:SdkBackend",
}


class BackendNotReady(RuntimeError):
    """The arm cannot be read yet (no state received since start or since a reset)."""


class ArmBackend(Protocol):
    """One arm. Joint positions in rad (6,), gripper opening in metres."""

    def read(self) -> tuple[np.ndarray, float]:
        """Measured joint positions (6,) and gripper opening; raises ``BackendNotReady``.

        An arm whose readings are older than the read (a state that came over a topic) also
        has ``measured_at() -> float``: when the last reading was taken, on the executor's
        clock. Without it, a reading is taken to be of the moment it is read (an SDK call,
        an arm simulated in the process)."""

    def command(self, joints: np.ndarray, gripper: float) -> None:
        """Send one position command (already through the safety filter)."""

    def gravity_compensation(self) -> None:
        """Make the arm compliant (a teleoperation leader arm)."""

    def close(self) -> None:
        """Release the arm."""


class GatedArm:
    """An arm whose commands pass only while its gate is open: the executor opens the gates
    when it is activated (lifecycle) and closes them when it is deactivated; in a dry run they
    never open. Everything else passes through (the arm is read, its state published), and the
    controller runs as ever, so what it would command is what a dry run shows; behind a closed
    gate the arm holds its last command."""

    def __init__(self, arm: ArmBackend):
        self._arm = arm
        self.open = False

    def command(self, joints: np.ndarray, gripper: float) -> None:
        if self.open:
            self._arm.command(joints, gripper)

    def __getattr__(self, name: str):  # read, measured_at (where the arm has it), close, ...
        return getattr(self._arm, name)


@dataclass
class BackendContext:
    """What a backend is built from."""

    values: dict[str, Any]  # every executor parameter, the backend's own included
    control_period: float  # s
    now: Callable[[], float]  # the executor's clock, s (sim time under use_sim_time)
    node: Any = None  # the executor node (rclpy), for backends that talk over topics


class Backend(Protocol):
    PARAMETERS: ClassVar[dict[str, tuple[Any, str]]]
    ARM_PARAMETERS: ClassVar[dict[str, tuple[Any, str]]]

    def __init__(self, context: BackendContext) -> None: ...

    def arm(self, name: str) -> ArmBackend:
        """The backend of arm ``name``."""

    def teleop_source(self, arms: tuple[str, ...]):
        """Who drives ``arms`` under ``control_source: teleop`` (a ``teleop.TeleopSource``)."""

    def advance(self, elapsed: float) -> None:
        """The executor's clock moved ``elapsed`` s (arms simulated in this process follow it)."""

    def forget(self) -> None:
        """The clock jumped back: drop every state received before it."""

    def close(self) -> None:
        """Release what the backend holds besides the arms (leader arms, connections)."""


def _registered() -> dict[str, str]:
    found = dict(BUILT_IN_BACKENDS)
    found.update({point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)})
    return found


def available_backends() -> list[str]:
    return sorted(_registered())


def backend_class(name: str) -> type[Backend]:
    """The backend registered as ``name``; ValueError naming the registered ones otherwise."""
    registered = _registered()
    if name not in registered:
        raise ValueError(f"backend must be one of {', '.join(sorted(registered))}, not {name!r}")
    module, _, attribute = registered[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
