"""ros2 launch rotvla_ros bringup.launch.py [sim:=true] [task:=block_to_plate] [checkpoint:=DIR]
    [instruction:="..."] [record:=false] [device:=cuda] [expert:=false]
    [head_serial:=...] [left_wrist_serial:=...] [right_wrist_serial:=...]
    [left_can:=can1] [right_can:=can3] [namespace:=cell_a]

The node set, its parameter files and overrides come from ``rotvla_ros.bringup``, the same
description the composed runner ``rotvla_run`` uses. On hardware, realsense2_camera's
rs_launch.py is included once per D405, each in a scoped GroupAction; with ``sim:=true`` the
MuJoCo cell replaces cameras and arms. ``record:=true`` runs ``ros2 bag record -s mcap`` on
the documented topics. When a required node (the simulation, the executor, the policy) exits,
the whole launch shuts down with that reason: half a system never keeps running.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

ARGUMENTS = {
    "sim": ("true", "the simulated cell (MuJoCo) instead of cameras and arms"),
    "task": ("block_to_plate", "block_to_plate, block_into_drawer or cup_stacking"),
    "checkpoint": ("", "checkpoint directory the policy serves at start"),
    "instruction": ("", "instruction (empty: the task's)"),
    "record": ("false", "record the documented topics with ros2 bag (mcap), and run the episode recorder"),
    "device": ("", "torch device of the policy (empty: the config's)"),
    "expert": ("false", "sim: the scripted expert drives the arms (demonstrations)"),
    "seed": ("0", "sim: seed of the task's randomisation"),
    "head_serial": ("", "serial number of the head D405"),
    "left_wrist_serial": ("", "serial number of the left wrist D405"),
    "right_wrist_serial": ("", "serial number of the right wrist D405"),
    "left_can": ("", "CAN interface of the left arm (empty: the config's)"),
    "right_can": ("", "CAN interface of the right arm (empty: the config's)"),
    "namespace": ("", "the cell's ROS namespace: every node, topic, service, camera and the sim clock under it"),
}


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _actions(context):
    from pathlib import Path

    from ament_index_python.packages import get_package_share_directory
    from launch_ros.actions import Node, PushRosNamespace

    from rotvla_common.action_space import CAMERA_NAMES
    from rotvla_common.topics import cell_ros_arguments, normalise_namespace
    from rotvla_ros.bringup import RECORD_TOPICS, SystemArgs, node_set, parameter_files, realsense_arguments

    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    args = SystemArgs(
        sim=_truthy(value("sim")),
        task=value("task"),
        checkpoint=value("checkpoint"),
        instruction=value("instruction"),
        device=value("device"),
        seed=int(value("seed")),
        expert=_truthy(value("expert")),
        record_episodes=_truthy(value("record")),
        camera_serials={c: value(f"{c}_serial") for c in CAMERA_NAMES},
        can_ports={arm: value(f"{arm}_can") for arm in ("left", "right") if value(f"{arm}_can")},
        namespace=normalise_namespace(value("namespace")),
    )
    share = Path(get_package_share_directory("rotvla_ros"))
    files = [str(f) for f in parameter_files(share / "config", args)]
    actions = []
    for spec in node_set(args):
        node = Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            output="screen",
            parameters=[*files, spec.parameters],
            emulate_tty=True,
            ros_arguments=cell_ros_arguments(args.namespace),  # the cell's namespace and clock
        )
        actions.append(node)
        if spec.required:
            actions.append(
                RegisterEventHandler(
                    OnProcessExit(
                        target_action=node,
                        on_exit=[EmitEvent(event=Shutdown(reason=f"required node {spec.name} exited"))],
                    )
                )
            )
    if not args.sim:
        rs_launch = Path(get_package_share_directory("realsense2_camera")) / "launch" / "rs_launch.py"
        for camera in CAMERA_NAMES:
            include = IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(rs_launch)),
                launch_arguments=realsense_arguments(camera, args.camera_serials.get(camera, "")).items(),
            )
            # Scoped: one camera's arguments and namespace do not leak into the next include.
            actions.append(GroupAction([PushRosNamespace(args.namespace), include], scoped=True, forwarding=False))
    if _truthy(value("record")):
        # A namespaced cell's own topics (the episode recorder writes them under the root names).
        recorded = [t if t in ("/tf", "/tf_static") else args.namespace + t for t in RECORD_TOPICS]
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "record", "-s", "mcap", *recorded], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_actions)]
    )
