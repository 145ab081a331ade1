"""ros2 launch rotvla_ros bringup.launch.py [sim:=true] [task:=block_to_plate] [checkpoint:=DIR]
    [instruction:="..."] [record:=false] [device:=cuda] [expert:=false]
    [head_serial:=...] [left_wrist_serial:=...] [right_wrist_serial:=...]
    [left_can:=can1] [right_can:=can3] [namespace:=cell_a] [dry_run:=false] [executor_state:=active]
    [policy:=true] [params_file:=calibrated.yaml]

The node set, its parameter files and overrides come from ``rotvla_ros.bringup``, the same
description the composed runner ``rotvla_run`` uses. On hardware, realsense2_camera's
rs_launch.py is included once per D405, each in a scoped GroupAction; with ``sim:=true`` the
MuJoCo cell replaces cameras and arms. ``record:=true`` runs ``ros2 bag record -s mcap`` on
the documented topics. When a required node (the simulation, the executor, the policy) exits,
the whole launch shuts down with that reason and exits non-zero: half a system never keeps
running. Every argument is checked before anything starts (``rotvla_ros.bringup.
system_args_from_launch``): an unknown name or an unusable value stops the launch with the
argument's name. Each node's overrides are a parameter file under its own section, passed
after the config files, so they win over the YAML in any namespace
(``rotvla_common.parameters``).
"""

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

from launch import LaunchDescription
from rotvla_ros.bringup import LAUNCH_ARGUMENTS


class RequiredNodeExited(RuntimeError):
    """Raised inside launch's event loop: launch logs it, shuts down and exits with 1."""


def _on_required_exit(name: str):
    """A required node's end ends the system. Our nodes exit 0 only when told to stop (a signal:
    Ctrl-C reaches every process of the group, and a node may end before launch has seen its
    own SIGINT): that is a stop. Any other code is a failure, and launch then exits 1."""

    def handler(event, context):
        if context.is_shutdown:
            return None
        if event.returncode == 0:
            return [EmitEvent(event=Shutdown(reason=f"required node {name} stopped"))]
        raise RequiredNodeExited(f"required node {name} exited with code {event.returncode}: stopping the system")

    return handler


def _actions(context):
    from pathlib import Path

    from ament_index_python.packages import get_package_share_directory
    from launch_ros.actions import Node, PushRosNamespace

    from rotvla_common.action_space import CAMERA_NAMES
    from rotvla_common.parameters import write_overrides
    from rotvla_common.topics import cell_ros_arguments
    from rotvla_ros.bringup import (
        RECORD_TOPICS,
        enclave,
        node_set,
        parameter_files,
        realsense_arguments,
        system_args_from_launch,
    )

    args = system_args_from_launch(dict(context.launch_configurations))
    share = Path(get_package_share_directory("rotvla_ros"))
    files = [str(f) for f in parameter_files(share / "config", args)]
    actions = []
    for spec in node_set(args):
        node = Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            output="screen",
            parameters=[*files, str(write_overrides(spec.name, spec.parameters))],
            emulate_tty=True,
            # The cell's namespace and clock; the node's SROS2 enclave (used where security is on).
            ros_arguments=[*cell_ros_arguments(args.namespace), "--enclave", enclave(spec.name)],
            sigterm_timeout=str(spec.stop_timeout),
        )
        actions.append(node)
        if spec.required:
            actions.append(
                RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_required_exit(spec.name)))
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
    if args.record_episodes:
        # A namespaced cell's own topics (the episode recorder writes them under the root names).
        recorded = [t if t in ("/tf", "/tf_static") else args.namespace + t for t in RECORD_TOPICS]
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "record", "-s", "mcap", *recorded], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in LAUNCH_ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_actions)]
    )
