"""The executor's parameters and how a controller is built from them, ROS-free: the executor
node declares these parameters (with these descriptions and defaults) and the in-process
simulation (``rotvla_ros.sim.env``) reads the same ROS parameter files
(``rotvla_common.parameters``); both build the controller with ``build_controller``.

Parameter names are the node's (``left.workspace_max``, ``latency.camera``, ...): a flat
dict of them is what ``build_controller`` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .clearance import ArmCapsules, ArmClearance
from .controller import Arm, ControllerConfig, DualArmController
from .kinematics import JOINT_NAMES, R5_JOINT_LIMITS, ArmKinematics
from .safety import ArmLimits, SafetyFilter

NODE_NAME = "arx_r5_executor"
HOME_JOINTS = [0.0, -1.9, -1.0, -0.5, 0.0, 0.0]  # EEF about 0.3 m ahead of the base, 0.12 m up

# name -> (default, description). config/robot.yaml sets the robot's values; these are what
# a parameter the files leave out takes: the controller's own defaults where it has the setting.
_CONTROLLER = ControllerConfig()
PARAMETERS: dict[str, tuple[Any, str]] = {
    "arms": (["left", "right"], "Arms, in the order of the action layout."),
    "control_rate": (1.0 / _CONTROLLER.control_period, "Control loop rate, Hz."),
    "max_cycle_period": (
        _CONTROLLER.max_cycle_period,
        "Speed caps apply over the time since the last cycle, at most this (s): a late "
        "cycle keeps the arm's speed, a stall never becomes a jump.",
    ),
    "overlap_steps": (_CONTROLLER.overlap_steps, "Chunk steps blended with the trajectory they replace."),
    "latency.camera": (0.0, "Exposure to image stamp, s: steps are scheduled this much earlier."),
    "latency.arm_command": (0.0, "Command to motion on the arm, s: steps are sent this much earlier."),
    "future_tolerance": (_CONTROLLER.future_tolerance, "A chunk stamped further ahead of the clock (s) is rejected."),
    "watchdog_timeout": (_CONTROLLER.watchdog_timeout, "No fresh chunk for this long (s): decelerate to a hold."),
    "hold_deceleration": (_CONTROLLER.hold_deceleration, "Time (s) to decelerate to a hold when the watchdog fires."),
    "min_clearance": (_CONTROLLER.min_clearance, "Smallest distance between the arms' link capsules, m."),
    "gripper_speed": (_CONTROLLER.gripper_speed, "Gripper opening speed cap, m/s."),
    "gripper_range_tolerance": (
        _CONTROLLER.gripper_range_tolerance,
        "Gripper targets this far (m) past the "
        "range's ends are clamped without counting a limit event (a policy's regression of "
        "'fully open').",
    ),
    "max_horizon": (
        _CONTROLLER.max_horizon,
        "Longest chunk accepted, steps (a longer one would stall the control loop).",
    ),
    "max_text": (_CONTROLLER.max_text, "Longest checkpoint id a chunk may carry, characters."),
    "max_chunk_bytes": (
        1 << 20,
        "Largest serialized chunk decoded, bytes; a larger one is refused unread (a 1,000-step "
        "chunk of 20 actions is 80 kB; decoding a 40 MB one held the control loop for 158 ms).",
    ),
    "max_joint_velocity": ([2.0, 2.0, 2.0, 3.0, 3.0, 3.0], "Joint speed caps, rad/s (J1..J6)."),
    "max_cartesian_speed": (0.5, "End-effector speed cap, m/s."),
    "joint_lower": (
        [R5_JOINT_LIMITS[j][0] for j in JOINT_NAMES],
        "Lower joint limits, rad (never wider than the manual's).",
    ),
    "joint_upper": (
        [R5_JOINT_LIMITS[j][1] for j in JOINT_NAMES],
        "Upper joint limits, rad (never wider than the manual's).",
    ),
    "homing_speed": (0.25, "Homing moves each joint at most this fraction of its speed cap."),
    "link_radius": (0.045, "Radius of the capsules covering each link, m."),
    "tool_length": (0.12, "Flange to fingertips, m (the last capsule)."),
}
# Per arm, under "<arm>.": name -> (default, description); a default of None: required.
ARM_PARAMETERS: dict[str, tuple[Any, str]] = {
    "base_xyz": (None, "Arm base position in the world, m."),
    "base_rpy": ([0.0, 0.0, 0.0], "Arm base roll-pitch-yaw in the world, rad."),
    "workspace_min": ([0.05, -0.45, -0.12], "Workspace box corner, m, in the arm's base frame."),
    "workspace_max": ([0.60, 0.45, 0.45], "Workspace box corner, m, in the arm's base frame."),
    "initial_joints": (HOME_JOINTS, "Start pose of a simulated arm, rad."),
    "ready_joints": (HOME_JOINTS, "The ready pose homing brings the arm to, rad."),
}


def with_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` completed with the defaults of every parameter a controller needs."""
    complete = {name: default for name, (default, _) in PARAMETERS.items()}
    complete.update(values)
    for arm in complete["arms"]:
        for name, (default, text) in ARM_PARAMETERS.items():
            if default is None and f"{arm}.{name}" not in complete:
                raise ValueError(f"parameter {arm}.{name} is required ({text})")
            complete.setdefault(f"{arm}.{name}", default)
    return complete


def controller_config(values: dict[str, Any]) -> ControllerConfig:
    return ControllerConfig(
        control_period=1.0 / values["control_rate"],
        max_cycle_period=values["max_cycle_period"],
        overlap_steps=values["overlap_steps"],
        latency_compensation=-(values["latency.camera"] + values["latency.arm_command"]),
        future_tolerance=values["future_tolerance"],
        watchdog_timeout=values["watchdog_timeout"],
        hold_deceleration=values["hold_deceleration"],
        min_clearance=values["min_clearance"],
        gripper_speed=values["gripper_speed"],
        gripper_range_tolerance=values["gripper_range_tolerance"],
        max_horizon=values["max_horizon"],
        max_text=values["max_text"],
    )


def arm_kinematics(values: dict[str, Any], arm: str) -> ArmKinematics:
    """An arm's kinematics at its base pose, with the configured joint limits (never wider than
    the manual's)."""
    limits = {
        name: (max(lo, R5_JOINT_LIMITS[name][0]), min(hi, R5_JOINT_LIMITS[name][1]))
        for name, lo, hi in zip(JOINT_NAMES, values["joint_lower"], values["joint_upper"])
    }
    return ArmKinematics(base_xyz=values[f"{arm}.base_xyz"], base_rpy=values[f"{arm}.base_rpy"], joint_limits=limits)


def build_controller(
    values: dict[str, Any], backend_for: Callable[[str], Any], action_names: tuple[str, ...]
) -> DualArmController:
    """The dual-arm controller of ``values`` (see ``with_defaults``); ``backend_for(arm)``
    gives each arm's backend (ArmBackend)."""
    values = with_defaults(values)
    arms, capsules = [], []
    for name in values["arms"]:
        kinematics = arm_kinematics(values, name)
        limits = ArmLimits(
            max_joint_velocity=values["max_joint_velocity"],
            max_cartesian_speed=values["max_cartesian_speed"],
            workspace_min=values[f"{name}.workspace_min"],
            workspace_max=values[f"{name}.workspace_max"],
        )
        arms.append(Arm(name, kinematics, SafetyFilter(kinematics, limits, name), backend_for(name)))
        capsules.append(ArmCapsules(kinematics, values["link_radius"], values["tool_length"]))
    clearance = ArmClearance(*capsules) if len(capsules) == 2 else None
    return DualArmController(arms, action_names, controller_config(values), clearance)
