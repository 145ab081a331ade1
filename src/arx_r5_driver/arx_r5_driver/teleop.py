"""Teleoperation sources for demo collection: who drives the arms when the policy does not.
A source gives joint targets per arm; the executor passes them through the same safety
filter and publishes the same topics as in policy execution, so a recording does not care
who drove. ROS-free."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .backends import ArmBackend
from .kinematics import GRIPPER_MAX_OPENING_M


class TeleopSource(Protocol):
    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        """Joint targets (6,) and gripper opening (m) per arm at time ``now``; an arm left out
        holds its command."""

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        """The source takes over at ``now`` from ``commands``, the joints (6,) and gripper
        opening in force per arm: nothing it gave before counts."""


class LeaderArms:
    """Hardware: the leader arms hang in gravity compensation and the followers mirror them."""

    def __init__(self, leaders: dict[str, ArmBackend]):
        self.leaders = leaders
        for leader in leaders.values():
            leader.gravity_compensation()

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        return {arm: leader.read() for arm, leader in self.leaders.items()}

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        pass  # the operator's hands are the source; the speed caps bring the followers to them

    def close(self) -> None:
        for leader in self.leaders.values():
            leader.close()


class ScriptedTeleop:
    """Simulation: a smooth joint-space motion about each arm's start pose (joints 1, 4, 5, 6
    swing, the gripper opens and closes), starting at rest. The task experts of the
    simulation plug in behind the same interface."""

    SWING = np.array([0.35, 0.0, 0.0, 0.3, 0.4, 0.5])  # rad, per joint

    def __init__(self, start: dict[str, np.ndarray], start_time: float, period: float = 6.0):
        self.start = {arm: np.asarray(q, float).copy() for arm, q in start.items()}
        self.start_time = start_time
        self.period = period

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        self.start = {arm: np.asarray(q, float).copy() for arm, (q, _) in commands.items() if arm in self.start}
        self.start_time = now

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        phase = 2 * np.pi * max(now - self.start_time, 0.0) / self.period
        out = {}
        for k, (arm, q0) in enumerate(self.start.items()):
            sign = 1.0 if k % 2 == 0 else -1.0  # the arms mirror each other
            # (1 - cos): zero velocity at the start, no jump from the pose the arm holds.
            swing = 0.5 * (1 - np.cos(phase)) * self.SWING * sign
            gripper = GRIPPER_MAX_OPENING_M * (0.25 + 0.5 * 0.5 * (1 - np.cos(2 * phase)))
            out[arm] = (q0 + swing, float(gripper))
        return out


class Homing:
    """To the ready pose: each arm from the command in force along a smoothstep in joint space,
    slow enough that no joint passes ``speed_fraction`` of its cap (the smoothstep's peak
    speed is 1.5 x its mean), grippers held; then it holds there."""

    def __init__(self, ready: dict[str, np.ndarray], caps: np.ndarray, speed_fraction: float):
        if not 0.0 < speed_fraction <= 1.0:
            raise ValueError(f"homing_speed must be in (0, 1], not {speed_fraction}")
        self.ready = {arm: np.asarray(q, float).copy() for arm, q in ready.items()}
        self.speed = np.asarray(caps, float) * speed_fraction  # (6,) rad/s
        self.start_time, self.duration = 0.0, 0.0
        self._from: dict[str, tuple[np.ndarray, float]] = {}

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        self._from = {arm: (np.asarray(q, float).copy(), g) for arm, (q, g) in commands.items() if arm in self.ready}
        travel = max((np.abs(self.ready[arm] - q) / self.speed).max() for arm, (q, _) in self._from.items())
        self.start_time, self.duration = now, 1.5 * travel

    def arrived(self, now: float) -> bool:
        return now >= self.start_time + self.duration

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        s = 1.0 if self.duration <= 0 else float(np.clip((now - self.start_time) / self.duration, 0.0, 1.0))
        s = s * s * (3 - 2 * s)
        return {arm: ((1 - s) * q + s * self.ready[arm], g) for arm, (q, g) in self._from.items()}
