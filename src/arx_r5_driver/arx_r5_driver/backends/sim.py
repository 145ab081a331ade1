"""The simulated backend: each arm a set of position-controlled joints with first-order
dynamics (time constant ``tau``) and velocity limits; the gripper the same. Time is whatever
the caller steps it by (the executor steps it on the ROS clock, so ``use_sim_time`` works).
The MuJoCo scene of the simulation issue replaces this behind the same interface."""

from __future__ import annotations

import numpy as np

from ..kinematics import GRIPPER_MAX_OPENING_M
from ..teleop import ScriptedTeleop
from . import BackendContext


class SimArm:
    def __init__(self, initial=None, tau: float = 0.05, max_velocity=3.0, gripper_speed: float = 0.2):
        self.joints = np.zeros(6) if initial is None else np.asarray(initial, float).copy()
        self.target = self.joints.copy()
        self.gripper = 0.0
        self.gripper_target = 0.0
        self.tau = tau
        self.max_velocity = np.broadcast_to(np.asarray(max_velocity, float), (6,))
        self.gripper_speed = gripper_speed
        self.compliant = False

    def read(self) -> tuple[np.ndarray, float]:
        return self.joints.copy(), self.gripper

    def command(self, joints: np.ndarray, gripper: float) -> None:
        self.target = np.asarray(joints, float).copy()
        self.gripper_target = float(np.clip(gripper, 0.0, GRIPPER_MAX_OPENING_M))
        self.compliant = False

    def gravity_compensation(self) -> None:
        self.compliant = True  # a leader arm: it stays where it is pushed (by a script, in sim)

    def close(self) -> None:
        self.target = self.joints.copy()

    def step(self, dt: float) -> None:
        """Advance the arm by ``dt`` seconds of (simulated) time."""
        if dt <= 0 or self.compliant:
            return
        # Exact first-order response over dt, then the velocity limit.
        delta = (self.target - self.joints) * (1.0 - np.exp(-dt / self.tau))
        self.joints = self.joints + np.clip(delta, -self.max_velocity * dt, self.max_velocity * dt)
        step = np.clip(self.gripper_target - self.gripper, -self.gripper_speed * dt, self.gripper_speed * dt)
        self.gripper += step


class SimBackend:
    """Simulated arms inside the executor's process, stepped on its clock; teleop is a
    scripted swing about each arm's start pose."""

    PARAMETERS: dict = {}
    ARM_PARAMETERS: dict = {}

    def __init__(self, context: BackendContext):
        self.context = context
        self.arms: list[SimArm] = []

    def arm(self, name: str) -> SimArm:
        values = self.context.values
        arm = SimArm(initial=values[f"{name}.initial_joints"], max_velocity=values["max_joint_velocity"])
        self.arms.append(arm)
        return arm

    def teleop_source(self, arms: tuple[str, ...]) -> ScriptedTeleop:
        start = {name: self.context.values[f"{name}.initial_joints"] for name in arms}
        return ScriptedTeleop(start, self.context.now())

    def advance(self, elapsed: float) -> None:
        for arm in self.arms:
            arm.step(elapsed)

    def forget(self) -> None:
        pass  # the arms live here: nothing was received

    def close(self) -> None:
        pass
