"""Arm backends behind one interface: ARX's SDK on the CAN bus (``sdk``), simulated arms."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class BackendNotReady(RuntimeError):
    """The arm cannot be read yet (no state received since start or since a reset)."""


class ArmBackend(Protocol):
    """One arm. Joint positions in rad (6,), gripper opening in metres."""

    def read(self) -> tuple[np.ndarray, float]:
        """Measured joint positions (6,) and gripper opening; raises ``BackendNotReady``."""

    def command(self, joints: np.ndarray, gripper: float) -> None:
        """Send one position command (already through the safety filter)."""

    def gravity_compensation(self) -> None:
        """Make the arm compliant (a teleoperation leader arm)."""

    def close(self) -> None:
        """Release the arm."""
