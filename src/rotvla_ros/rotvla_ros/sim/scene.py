"""The MJCF of the simulated robot cell, generated from the R5 URDF's kinematics.

- Each arm is the URDF's joint chain (placements, axes, inertias read with Pinocchio, so
  the simulated arm and the executor's IK are the same kinematics), with capsules between
  joint origins as geometry (ARX ships no meshes). The links are gravity compensated and
  position servoed, like the R5's own controller; they do not collide (the executor keeps
  the arms apart); the gripper does.
- The gripper: a palm on the flange and two fingers on slide joints along the tool's y
  axis, 0-80 mm apart, position controlled with a limited force: it grasps by friction.
- Cameras: ``head`` above and behind the arms looking at the table; ``<arm>_wrist`` on each
  flange looking along the tool. The table top is the world's z = 0; the arm bases stand on
  risers (base z from the robot configuration).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from arx_r5_driver.configuration import NODE_NAME
from arx_r5_driver.kinematics import JOINT_NAMES, R5_JOINT_LIMITS, ArmKinematics

from .shift import STANDARD_LOOK, Look

LINK_RADIUS = 0.03
FINGER_TRAVEL = 0.04  # each finger, m: 80 mm opening in all
AXES = {"JointModelRX": "1 0 0", "JointModelRY": "0 1 0", "JointModelRZ": "0 0 1"}


def vec(values) -> str:
    """Numbers as an MJCF attribute value."""
    return " ".join(f"{v:.6g}" for v in np.ravel(values))


def _quat(rotation: np.ndarray) -> str:
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return vec([w, x, y, z])


def look_at(position, target, up=(0.0, 0.0, 1.0)) -> str:
    """MuJoCo ``xyaxes`` of a camera at ``position`` looking at ``target`` (it looks along -z)."""
    forward = np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return vec(np.r_[x, y])


@dataclass
class ArmMount:
    name: str
    base_xyz: tuple[float, float, float]
    base_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rgba: str = "0.25 0.25 0.28 1"


@dataclass
class SceneConfig:
    arms: list[ArmMount]  # the robot's, from its parameter files: scene_of / robot_scene
    timestep: float = 0.002
    head_camera: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-0.25, 0.0, 0.75), (0.38, 0.0, 0.0))
    camera_fovy: float = 58.0  # the D405's vertical field of view, degrees


def scene_of(values: dict) -> SceneConfig:
    """The cell of the executor's parameter values (``arms``, ``<arm>.base_xyz/base_rpy``)."""
    return SceneConfig(
        arms=[
            ArmMount(arm, tuple(values[f"{arm}.base_xyz"]), tuple(values.get(f"{arm}.base_rpy", (0.0, 0.0, 0.0))))
            for arm in values["arms"]
        ]
    )


def robot_scene(config_dir: Path | None = None) -> SceneConfig:
    """The cell of the robot's parameter file (config/robot.yaml): where its arms stand."""
    from rotvla_common.parameters import read_parameter_files

    from ..bringup import default_config_dir

    path = Path(config_dir or default_config_dir()) / "robot.yaml"
    return scene_of(read_parameter_files([path], NODE_NAME))


def _arm_xml(mount: ArmMount, kinematics: ArmKinematics) -> str:
    model = kinematics.model
    prefix = mount.name
    base_rotation = Rotation.from_euler("xyz", mount.base_rpy).as_matrix()
    lines = [
        f'<body name="{prefix}_base_link" pos="{vec(mount.base_xyz)}" quat="{_quat(base_rotation)}">',
        f'<geom type="cylinder" size="0.06 {mount.base_xyz[2] / 2 + 1e-3:.4f}" pos="0 0 {-mount.base_xyz[2] / 2:.4f}" '
        f'rgba="0.15 0.15 0.15 1" contype="0" conaffinity="0"/>',
    ]
    for i in range(1, model.njoints):
        placement = model.jointPlacements[i]
        inertia = model.inertias[i]
        name = model.names[i]
        lo, hi = R5_JOINT_LIMITS[name]
        lines.append(
            f'<body name="{prefix}_link{i}" pos="{vec(placement.translation)}" quat="{_quat(placement.rotation)}" gravcomp="1">'
        )
        full = inertia.inertia
        lines.append(
            f'<inertial pos="{vec(inertia.lever)}" mass="{max(inertia.mass, 0.01):.5g}" '
            f'fullinertia="{vec([full[0, 0], full[1, 1], full[2, 2], full[0, 1], full[0, 2], full[1, 2]])}"/>'
        )
        lines.append(
            f'<joint name="{prefix}_{name}" axis="{AXES[model.joints[i].shortname()]}" range="{lo} {hi}" '
            f'damping="3" armature="0.02"/>'
        )
        if i + 1 < model.njoints:  # a capsule to the next joint's origin
            end = model.jointPlacements[i + 1].translation
            if np.linalg.norm(end) > 1e-3:
                lines.append(
                    f'<geom type="capsule" fromto="0 0 0 {vec(end)}" size="{LINK_RADIUS}" rgba="{mount.rgba}" '
                    f'contype="0" conaffinity="0"/>'
                )
    # The flange (joint6's frame): palm, fingers and the wrist camera; the tool points along x.
    lines += [
        f'<site name="{prefix}_flange" pos="0 0 0" size="0.005"/>',
        f'<geom name="{prefix}_palm" type="box" pos="0.035 0 0" size="0.03 0.045 0.02" rgba="0.2 0.2 0.2 1" mass="0.2" '
        'contype="0" conaffinity="0"/>',  # only the fingers touch: a palm this size would sit on a cup's rim
        f'<camera name="{prefix}_wrist" pos="0.0 0 0.05" xyaxes="{look_at((0.0, 0, 0.05), (0.25, 0, -0.04))}" fovy="58"/>',
    ]
    for side, sign in (("a", 1), ("b", -1)):
        lines += [
            f'<body name="{prefix}_finger_{side}" pos="0.09 {sign * 0.006:.3f} 0">',
            f'<joint name="{prefix}_finger_{side}" type="slide" axis="0 {sign} 0" range="0 {FINGER_TRAVEL}" damping="5" armature="0.01"/>',
            f'<geom name="{prefix}_finger_{side}" type="box" size="0.03 0.006 0.012" rgba="0.8 0.8 0.8 1" mass="0.03" '
            f'friction="2 0.02 0.002" condim="4" solref="0.005 1"/>',
            "</body>",
        ]
    lines += ["</body>"] * (model.njoints - 1) + ["</body>"]
    return "\n".join(lines)


def _actuators_xml(arms: list[ArmMount]) -> str:
    lines = []
    for mount in arms:
        for joint in JOINT_NAMES:
            lines.append(
                f'<position name="{mount.name}_{joint}" joint="{mount.name}_{joint}" kp="400" kv="20" '
                f'forcerange="-60 60" ctrlrange="{R5_JOINT_LIMITS[joint][0]} {R5_JOINT_LIMITS[joint][1]}"/>'
            )
        for side in ("a", "b"):
            lines.append(
                f'<position name="{mount.name}_finger_{side}" joint="{mount.name}_finger_{side}" kp="400" kv="8" '
                f'forcerange="-15 15" ctrlrange="0 {FINGER_TRAVEL}"/>'
            )
    return "\n".join(lines)


def build_mjcf(config: SceneConfig, task_xml: str, look: Look = STANDARD_LOOK) -> str:
    """The whole cell: table, arms, the task's objects (``task_xml``, world-body children)."""
    kinematics = ArmKinematics()
    head_position, head_target = config.head_camera
    arms = "\n".join(_arm_xml(mount, kinematics) for mount in config.arms)
    lights = "\n".join(
        f'<light pos="{vec(light.position)}" dir="{vec(light.direction)}" diffuse="{vec(light.diffuse)}"/>'
        for light in look.lights
    )
    rgb1, rgb2 = look.table_rgb
    skybox = ""
    if look.background is not None:
        skybox = (
            f'<texture type="skybox" builtin="gradient" width="128" height="128" '
            f'rgb1="{vec(look.background[0])}" rgb2="{vec(look.background[1])}"/>'
        )
    return f"""<mujoco model="arx_r5_dual">
<compiler angle="radian" autolimits="true"/>
<option timestep="{config.timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
<visual><global offwidth="640" offheight="480"/><quality shadowsize="0"/></visual>
<default><geom friction="1 0.01 0.001" solref="0.01 1"/></default>
<asset>
  <texture name="grid" type="2d" builtin="{look.table_texture}" width="256" height="256" rgb1="{vec(rgb1)}" rgb2="{vec(rgb2)}"/>
  <material name="table" texture="grid" texrepeat="{look.table_repeat} {look.table_repeat}"/>
  {skybox}
</asset>
<worldbody>
{lights}
<geom name="table" type="box" pos="0.3 0 -0.02" size="0.45 0.7 0.02" material="table"/>
<camera name="head" pos="{vec(head_position)}" xyaxes="{look_at(head_position, head_target)}" fovy="{config.camera_fovy}"/>
{arms}
{task_xml}
{look.bodies_xml}
</worldbody>
<actuator>
{_actuators_xml(config.arms)}
</actuator>
</mujoco>"""
