"""The hardware backend: ARX's own Python SDK (``arx_r5_sdk.single_arm.SingleArm``), one
instance per arm on its CAN port. The SDK is imported only when this backend is built: its
compiled part exists for CPython 3.12 only (Ubuntu 24.04 / Jazzy)."""

from __future__ import annotations

import numpy as np

from ..kinematics import gripper_to_sdk, sdk_to_gripper
from ..teleop import LeaderArms
from . import BackendContext

# SingleArm's `type`: 0 selects the X5 lite URDF, 1 the R5 (R5_master.urdf).
R5_ARM_TYPE = 1

# The mounts come from the robot's file, and the backend must be set for the node by name: a
# plain -p (every node's rule) ranks below the file's executor section.
SIM_ARMS_ARGUMENTS = "--ros-args --params-file config/robot.yaml -p arx_r5_executor:backend:=sim"


class SdkArm:
    def __init__(self, can_port: str, control_period: float):
        try:  # only here: see the module docstring
            from arx_r5_sdk.single_arm import SingleArm
        except ImportError as error:
            raise ImportError(
                f"backend sdk needs ARX's R5 SDK (the arx_r5_sdk package and its compiled "
                f"library, CPython 3.12) for {can_port}: {error}. Without the arms: the simulated cell "
                "(ros2 launch rotvla_ros bringup.launch.py sim:=true), or the executor alone on simulated arms "
                f"with {SIM_ARMS_ARGUMENTS}"
            ) from error

        self.can_port = can_port
        self.arm = SingleArm({"can_port": can_port, "type": R5_ARM_TYPE, "num_joints": 6, "dt": control_period})
        self._gripper = 0.0

    def read(self) -> tuple[np.ndarray, float]:
        values = np.asarray(self.arm.get_joint_positions(), dtype=float).ravel()
        if values.size < 6:
            raise RuntimeError(f"{self.can_port}: the SDK returned {values.size} joint positions")
        # The SDK's vector carries the gripper (0..5) after the six joints where it reports it.
        gripper = sdk_to_gripper(values[6]) if values.size > 6 else self._gripper
        return values[:6].copy(), gripper

    def command(self, joints: np.ndarray, gripper: float) -> None:
        self.arm.set_joint_positions(np.asarray(joints, dtype=float))
        self.arm.set_catch_pos(gripper_to_sdk(gripper))
        self._gripper = gripper

    def gravity_compensation(self) -> None:
        self.arm.gravity_compensation()

    def go_home(self) -> None:
        self.arm.go_home()

    def close(self) -> None:
        self.arm.protect_mode()  # the SDK's safe, damped state


class SdkBackend:
    """The real arms on their CAN ports; teleop mirrors the leader arms on theirs."""

    PARAMETERS: dict = {}
    ARM_PARAMETERS = {
        "can_port": ("", "CAN interface of the follower arm (sdk)."),
        "leader_can_port": ("", "CAN interface of the leader arm (sdk teleop)."),
    }

    def __init__(self, context: BackendContext):
        self.context = context
        self.leaders: LeaderArms | None = None

    def arm(self, name: str) -> SdkArm:
        return SdkArm(self.context.values[f"{name}.can_port"], self.context.control_period)

    def teleop_source(self, arms: tuple[str, ...]) -> LeaderArms:
        values, period = self.context.values, self.context.control_period
        self.leaders = LeaderArms({name: SdkArm(values[f"{name}.leader_can_port"], period) for name in arms})
        return self.leaders

    def advance(self, elapsed: float) -> None:
        pass  # the arms move in the world

    def forget(self) -> None:
        pass  # every read asks the arms

    def close(self) -> None:
        if self.leaders is not None:
            self.leaders.close()
