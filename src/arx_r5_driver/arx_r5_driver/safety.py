"""The per-arm safety filter every joint command passes, whatever its source (policy, teleop,
hold): independent of the policy, it guarantees, for an arm whose previous command was
within limits,

- no command outside the joint limits (the R5 manual's);
- no joint faster than its velocity cap, over one control period;
- no end-effector motion faster than the Cartesian speed cap;
- no end-effector position outside the arm's workspace box (a command that would leave the
  box is not taken; from outside the box, only motion that does not move further out is);
- a non-finite target holds the previous command.

``filter`` returns the command and the names of the limits that changed it, for
ExecutorStatus.limits_hit and /diagnostics. ROS-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kinematics import JOINT_NAMES, ArmKinematics


@dataclass
class ArmLimits:
    max_joint_velocity: np.ndarray  # (6,) rad/s
    max_cartesian_speed: float  # m/s, of the end effector
    workspace_min: np.ndarray  # (3,) m, in the arm's base frame
    workspace_max: np.ndarray  # (3,) m

    def __post_init__(self):
        self.max_joint_velocity = np.broadcast_to(np.asarray(self.max_joint_velocity, float), (6,)).copy()
        self.workspace_min = np.asarray(self.workspace_min, float)
        self.workspace_max = np.asarray(self.workspace_max, float)
        if (self.max_joint_velocity <= 0).any() or self.max_cartesian_speed <= 0:
            raise ValueError("speed caps must be positive")
        if (self.workspace_min >= self.workspace_max).any():
            raise ValueError("the workspace box is empty")


class SafetyFilter:
    # Halvings of a step that is too fast in Cartesian space before holding instead.
    CARTESIAN_HALVINGS = 12

    def __init__(self, kinematics: ArmKinematics, limits: ArmLimits, arm: str = ""):
        self.kinematics = kinematics
        self.limits = limits
        self.prefix = f"{arm}/" if arm else ""

    def _outside(self, position: np.ndarray) -> float:
        """Distance (m) from the workspace box; 0 inside."""
        below = np.maximum(self.limits.workspace_min - position, 0.0)
        above = np.maximum(position - self.limits.workspace_max, 0.0)
        return float(np.linalg.norm(below + above))

    def filter(self, previous: np.ndarray, target: np.ndarray, period: float) -> tuple[np.ndarray, list[str]]:
        """The command to send one control ``period`` after ``previous`` (6,), towards
        ``target`` (6,), and the limits that modified it."""
        previous = np.asarray(previous, float)
        hit: list[str] = []
        target = np.asarray(target, float)
        if target.shape != (6,) or not np.isfinite(target).all():
            return previous.copy(), [f"{self.prefix}nonfinite_target"]
        lower, upper = self.kinematics.lower, self.kinematics.upper
        clamped = np.clip(target, lower, upper)
        hit += [f"{self.prefix}{name}:position" for name, t, c in zip(JOINT_NAMES, target, clamped) if t != c]

        step = clamped - previous
        allowed = self.limits.max_joint_velocity * period
        ratio = float(np.max(np.abs(step) / allowed))
        if ratio > 1.0:
            step /= ratio  # the same direction, slower: every joint within its cap
            hit.append(f"{self.prefix}joint_speed")

        start_position, _ = self.kinematics.fk(previous)
        start_outside = self._outside(start_position)
        max_travel = self.limits.max_cartesian_speed * period
        for halving in range(self.CARTESIAN_HALVINGS + 1):
            command = previous + step
            position, _ = self.kinematics.fk(command)
            too_fast = np.linalg.norm(position - start_position) > max_travel
            leaves = self._outside(position) > max(start_outside, 0.0) + 1e-9
            if not too_fast and not leaves:
                break
            if halving == 0:
                hit.append(f"{self.prefix}{'cartesian_speed' if too_fast else 'workspace'}")
            step = step / 2
        else:
            return previous.copy(), hit  # no safe fraction of the step: hold
        return command, hit
