"""ARX R5 kinematics: Pinocchio on ARX's own URDF, one model per arm.

- The URDF is the one ARX ships in its ``arx_r5_sdk`` package (``R5_master.urdf``), read from
  the installed package directory without importing the package (its compiled part is built
  for CPython 3.12 only).
- Joint limits are the R5 manual's; the URDF's +-10 rad are placeholders.
- The end effector is the frame of ``link6`` (the flange); poses are in the arm's base frame.
  Each arm's base pose in the world comes from the robot configuration.
- IK is damped least squares on SE(3) (the error is log6 of current^-1 * target, in the
  end-effector frame), seeded from the current joints and clamped to the joint limits after
  every step: the executor asks for targets a control period away from where the arm is.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin
from scipy.spatial.transform import Rotation

JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 7))


def joint_names(arm: str) -> list[str]:
    """An arm's names in a JointState (the executor's, the sim's, teleop targets): joints, then gripper."""
    return [f"{arm}_{joint}" for joint in JOINT_NAMES] + [f"{arm}_gripper"]


# ARX R5 manual, rad.
R5_JOINT_LIMITS = {
    "joint1": (-3.14, 2.6),
    "joint2": (-3.6, 0.1),
    "joint3": (-1.57, 1.57),
    "joint4": (-1.3, 1.3),
    "joint5": (-1.57, 1.57),
    "joint6": (-2.1, 2.1),
}
# The SDK's gripper command spans 0..5 for an opening of 0..80 mm.
GRIPPER_MAX_OPENING_M = 0.08
SDK_GRIPPER_MAX = 5.0
EE_FRAME = "link6"


def vendor_urdf(name: str = "R5_master.urdf") -> Path:
    """Path of a URDF shipped in ARX's ``arx_r5_sdk`` package, found without importing it."""
    spec = importlib.util.find_spec("arx_r5_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ARX's arx_r5_sdk package is not installed (pip install arx-r5-sdk)")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the installed arx_r5_sdk package ({path.parent})")
    return path


def gripper_to_sdk(opening_m: float) -> float:
    """Gripper opening in metres -> the SDK's 0..5 command (clamped)."""
    return float(np.clip(opening_m / GRIPPER_MAX_OPENING_M, 0.0, 1.0) * SDK_GRIPPER_MAX)


def sdk_to_gripper(command: float) -> float:
    """The SDK's 0..5 gripper value -> opening in metres."""
    return float(np.clip(command / SDK_GRIPPER_MAX, 0.0, 1.0) * GRIPPER_MAX_OPENING_M)


@dataclass
class IKResult:
    q: np.ndarray  # (6,) joint positions, within the limits
    success: bool
    position_error: float  # m
    rotation_error: float  # rad
    iterations: int


class ArmKinematics:
    def __init__(
        self,
        urdf: Path | None = None,
        base_xyz=(0.0, 0.0, 0.0),
        base_rpy=(0.0, 0.0, 0.0),
        joint_limits: dict[str, tuple[float, float]] | None = None,
    ):
        self.model = pin.buildModelFromUrdf(str(urdf or vendor_urdf()))
        self.data = self.model.createData()
        limits = joint_limits or R5_JOINT_LIMITS
        names = [self.model.names[i] for i in range(1, self.model.njoints)]
        if tuple(names) != JOINT_NAMES:
            raise ValueError(f"expected the R5's joints {JOINT_NAMES}, the URDF has {names}")
        self.lower = np.array([limits[n][0] for n in JOINT_NAMES])
        self.upper = np.array([limits[n][1] for n in JOINT_NAMES])
        self.model.lowerPositionLimit = self.lower.copy()
        self.model.upperPositionLimit = self.upper.copy()
        self.ee_frame = self.model.getFrameId(EE_FRAME)
        self.base_in_world = pin.SE3(Rotation.from_euler("xyz", base_rpy).as_matrix(), np.asarray(base_xyz, float))

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions (6,) -> EEF position (3,) and rotation (3, 3) in the arm's base frame."""
        pin.framesForwardKinematics(self.model, self.data, np.asarray(q, float))
        pose = self.data.oMf[self.ee_frame]
        return pose.translation.copy(), pose.rotation.copy()

    def fk_world(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position, rotation = self.fk(q)
        pose = self.base_in_world * pin.SE3(rotation, position)
        return pose.translation.copy(), pose.rotation.copy()

    def within_limits(self, q: np.ndarray, tolerance: float = 0.0) -> bool:
        return bool(np.all(q >= self.lower - tolerance) and np.all(q <= self.upper + tolerance))

    def ik(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        seed: np.ndarray,
        max_iterations: int = 200,
        position_tolerance: float = 1e-4,
        rotation_tolerance: float = 1e-3,
        damping: float = 1e-4,
        max_step: float = 0.2,
    ) -> IKResult:
        """Joints reaching the pose (position (3,), rotation (3, 3), base frame), starting at
        ``seed``; ``success`` is False when the tolerances are not met (unreachable, or a
        limit in the way): the caller must not command such a result blindly."""
        target = pin.SE3(np.asarray(rotation, float), np.asarray(position, float))
        q = np.clip(np.asarray(seed, float), self.lower, self.upper)
        for iteration in range(1, max_iterations + 1):
            pin.framesForwardKinematics(self.model, self.data, q)
            current = self.data.oMf[self.ee_frame]
            error = pin.log6(current.actInv(target)).vector  # (6,) in the EEF frame: [v, w]
            position_error = float(np.linalg.norm(current.translation - target.translation))
            rotation_error = float(np.linalg.norm(error[3:]))
            if position_error < position_tolerance and rotation_error < rotation_tolerance:
                return IKResult(q, True, position_error, rotation_error, iteration - 1)
            jacobian = pin.computeFrameJacobian(self.model, self.data, q, self.ee_frame, pin.LOCAL)  # (6, 6)
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping * np.eye(6), error)
            scale = np.abs(step).max() / max_step
            if scale > 1:
                step /= scale
            q = np.clip(q + step, self.lower, self.upper)
        pin.framesForwardKinematics(self.model, self.data, q)
        current = self.data.oMf[self.ee_frame]
        position_error = float(np.linalg.norm(current.translation - target.translation))
        rotation_error = float(np.linalg.norm(pin.log3(current.rotation.T @ target.rotation)))
        ok = position_error < position_tolerance and rotation_error < rotation_tolerance
        return IKResult(q, ok, position_error, rotation_error, max_iterations)
