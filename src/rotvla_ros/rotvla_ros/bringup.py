"""The one description of the running system: which nodes, from which packages, with which
parameter files and overrides. ``launch/bringup.launch.py`` turns it into launch_ros
actions; ``rotvla_run`` (nodes/runner.py) instantiates the same nodes in one process. No
rclpy here: the launch file imports it too.

Parameter files: ``config/robot.yaml``, ``config/sim.yaml`` in simulation, then each node's
overrides from the arguments (the task's name and instruction among them: ``sim.tasks``),
written under the node's own section (``rotvla_common.parameters``: how rcl ranks sections and files). The
launch arguments are checked here too (``system_args_from_launch``), so a typo fails before
anything starts.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES
from rotvla_common.arguments import existing_file
from rotvla_common.contract import ACTIVE, EXECUTOR_STATES

from .sim.shift import describe, parse_shift
from .sim.tasks import TASK_NAMES, TASKS

# What `record:=true` records (the episode recorder reads the same).
RECORD_TOPICS = (
    *(topics.absolute(f"{topics.CAMERAS}/{c}/color/image_raw") for c in CAMERA_NAMES),
    *(topics.absolute(f"{topics.CAMERAS}/{c}/color/camera_info") for c in CAMERA_NAMES),
    topics.absolute(topics.JOINT_STATES),
    topics.absolute(topics.TELEOP_INTENDED),
    topics.absolute(topics.eef_pose("left")),
    topics.absolute(topics.eef_pose("right")),
    topics.absolute(topics.ACTION_CHUNK),
    topics.absolute(topics.EXECUTOR_STATUS),
    topics.absolute(topics.INSTRUCTION),
    "/tf",
    "/tf_static",
    topics.CLOCK,
)


@dataclass(frozen=True)
class NodeSpec:
    name: str  # the node's name: its section in the parameter files
    package: str
    executable: str  # console script (launch)
    entry: str  # "module:Class" (the composed runner)
    parameters: dict = field(default_factory=dict)  # overrides on top of the files
    threads: int = 1  # executor threads in the composed runner (>1: blocking callbacks)
    # The composed runner starts it as a process of its own, as launch does every node. The
    # policy's forward is thousands of small torch ops, each taking the GIL back: sharing a
    # process with the other nodes' threads made a 7 ms tiny-checkpoint forward take
    # 600-900 ms on 2 cores, and every chunk arrived stale.
    own_process: bool = False
    # Without it the system cannot run (the arms, their commands, the simulated world): its
    # end ends the whole bringup, under launch (OnProcessExit -> Shutdown) and in rotvla_run.
    required: bool = False
    # Seconds between the stop signal and escalation (launch's SIGTERM; rotvla_run's kill). The
    # policy may be in the middle of an inference or a checkpoint's warm-up, which on a loaded
    # 2-core machine took longer than launch's default 5 s (3 of 14 stops were escalated).
    stop_timeout: float = 5.0


@dataclass(frozen=True)
class SystemArgs:
    sim: bool = True
    task: str = "block_to_plate"
    checkpoint: str = ""
    instruction: str = ""  # empty: the task's
    device: str = ""  # empty: the files'
    seed: int = 0
    shift: str = "none"  # sim: domain shift of the scenes, in sim.shift.describe's words
    expert: bool = False  # sim: the scripted expert drives (teleop), for demos
    # sim: the scripted expert stands by as the operator; the policy drives until
    # /rotvla/set_control_source hands it the arms (interventions)
    operator: bool = False
    dry_run: bool = False  # the executor computes and shows every command, sends none
    executor_state: str = "active"  # how far the executor's lifecycle goes at start (EXECUTOR_STATES)
    camera_serials: dict = field(default_factory=dict)  # camera -> serial number (hardware)
    can_ports: dict = field(default_factory=dict)  # arm -> CAN interface (hardware)
    status: bool = True  # the status monitor
    status_overwrite: bool = False  # its line rewritten in place (an interactive terminal, not launch)
    policy: bool = True  # False: recording demonstrations needs no policy
    record_episodes: bool = False  # the episode recorder node (start/stop/discard services)
    # The cell's ROS namespace (empty: the root): every node, its topics, services, cameras and
    # sim clock under it (rotvla_common.topics.cell_ros_arguments), so cells can run side by side.
    namespace: str = ""
    # A parameter file applied after the config's (rotvla_calibrate_latency's measured latencies).
    params_file: str = ""


# ``ros2 launch rotvla_ros bringup.launch.py NAME:=VALUE``: name -> (default, description).
LAUNCH_ARGUMENTS = {
    "sim": ("true", "true: the simulated cell (MuJoCo) replaces cameras and arms; false: the robot"),
    "task": ("block_to_plate", " or ".join(TASK_NAMES)),
    "checkpoint": ("", "checkpoint directory the policy serves at start (sim default: the task's shipped one)"),
    "instruction": ("", "instruction (empty: the task's)"),
    "record": ("false", "record the documented topics with ros2 bag (mcap), and run the episode recorder"),
    "device": ("", "torch device of the policy: cpu, cuda, cuda:N or auto (empty: the config's)"),
    "expert": ("false", "sim: the scripted expert drives the arms (demonstrations); no policy node"),
    "policy": ("true", "the policy node (false: nothing sends chunks, e.g. for rotvla_calibrate_latency)"),
    "operator": (
        "false",
        "sim: the policy drives; the scripted expert is the operator who takes over on /rotvla/set_control_source",
    ),
    "dry_run": ("false", "the executor computes, checks and publishes every command, and sends none to the arms"),
    "executor_state": (
        "active",
        "how far the executor goes by itself: active, inactive (the arms read, nothing sent until "
        "`ros2 lifecycle set /arx_r5_executor activate`) or unconfigured",
    ),
    "seed": ("0", "sim: seed of the task's randomisation (an integer >= 0)"),
    "shift": ("none", "sim: domain shift for evaluation: none, all or a list of table,background,lighting,distractors"),
    **{f"{c}_serial": ("", f"serial number of the {c.replace('_', ' ')} D405") for c in CAMERA_NAMES},
    "left_can": ("", "CAN interface of the left arm (empty: the config's)"),
    "right_can": ("", "CAN interface of the right arm (empty: the config's)"),
    "namespace": ("", "the cell's ROS namespace: every node, topic, service, camera and the sim clock under it"),
    "params_file": ("", "a parameter file applied after the config's (e.g. rotvla_calibrate_latency --output)"),
}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}  # launch's own condition words
_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")
_CAN_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # a Linux interface name (IFNAMSIZ - 1)
_SERIAL = re.compile(r"[0-9A-Za-z]{1,32}")


class LaunchArgumentError(ValueError):
    """A launch argument that is unknown or has a value the bringup cannot use."""


def _launch_value(values: dict[str, str], name: str) -> str:
    return values.get(name, LAUNCH_ARGUMENTS[name][0])


def _launch_boolean(values: dict[str, str], name: str) -> bool:
    value = _launch_value(values, name)
    if value.strip().lower() not in _BOOLEANS:
        raise LaunchArgumentError(f"launch argument {name}:={value!r} is neither true nor false")
    return _BOOLEANS[value.strip().lower()]


def _launch_choice(values: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _launch_value(values, name)
    if value not in choices:
        raise LaunchArgumentError(f"launch argument {name}:={value!r} is not one of {', '.join(choices)}")
    return value


def _launch_pattern(values: dict[str, str], name: str, pattern: re.Pattern, what: str) -> str:
    value = _launch_value(values, name)
    if value and not pattern.fullmatch(value):
        raise LaunchArgumentError(f"launch argument {name}:={value!r} is not {what}")
    return value


def system_args_from_launch(values: dict[str, str]) -> SystemArgs:
    """The system a ``ros2 launch`` command line asks for; LaunchArgumentError names the first
    argument that is unknown (with the nearest known name) or whose value cannot be used."""
    for name in values:
        if name not in LAUNCH_ARGUMENTS:
            near = difflib.get_close_matches(name, LAUNCH_ARGUMENTS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(LAUNCH_ARGUMENTS)})"
            raise LaunchArgumentError(f"unknown launch argument {name!r}{hint}")
    task = _launch_value(values, "task")
    if task not in TASK_NAMES:
        raise LaunchArgumentError(f"launch argument task:={task!r} is not one of {', '.join(TASK_NAMES)}")
    seed = _launch_value(values, "seed")
    if not seed.strip().isdigit():
        raise LaunchArgumentError(f"launch argument seed:={seed!r} is not an integer >= 0")
    checkpoint = _launch_value(values, "checkpoint")
    if checkpoint:
        checkpoint = os.path.abspath(os.path.expanduser(checkpoint))
        if not Path(checkpoint).is_dir():
            raise LaunchArgumentError(f"launch argument checkpoint:={checkpoint!r} is no directory")
    try:
        namespace = topics.normalise_namespace(_launch_value(values, "namespace"))
    except ValueError as error:
        raise LaunchArgumentError(f"launch argument namespace: {error}") from None
    expert = _launch_boolean(values, "expert")
    params_file = _launch_value(values, "params_file")
    if params_file:
        try:
            params_file = existing_file(params_file)
        except argparse.ArgumentTypeError as error:
            raise LaunchArgumentError(f"launch argument params_file:={params_file!r}: {error}") from None
    shift = _launch_value(values, "shift")
    try:
        shift = describe(parse_shift(shift))
    except ValueError as error:
        raise LaunchArgumentError(f"launch argument shift:={shift!r}: {error}") from None
    return SystemArgs(
        sim=_launch_boolean(values, "sim"),
        task=task,
        checkpoint=checkpoint,
        instruction=_launch_value(values, "instruction"),
        device=_launch_pattern(values, "device", _DEVICE, "auto, cpu, cuda or cuda:N"),
        seed=int(seed),
        shift=shift,
        expert=expert,
        operator=_launch_boolean(values, "operator"),
        dry_run=_launch_boolean(values, "dry_run"),
        executor_state=_launch_choice(values, "executor_state", EXECUTOR_STATES),
        policy=_launch_boolean(values, "policy") and not expert,
        record_episodes=_launch_boolean(values, "record"),
        camera_serials={
            c: _launch_pattern(values, f"{c}_serial", _SERIAL, "a serial number (letters and digits)")
            for c in CAMERA_NAMES
        },
        can_ports={
            arm: port
            for arm in ("left", "right")
            if (port := _launch_pattern(values, f"{arm}_can", _CAN_INTERFACE, "a network interface name"))
        },
        namespace=namespace,
        params_file=params_file,
    )


def enclave(node_name: str) -> str:
    """The SROS2 enclave a node of the bringup runs in (``--enclave``): its keys in the keystore
    under this path (README, DDS security). Without ROS_SECURITY_ENABLE it is not used."""
    return f"/rotvla/{node_name}"


def default_config_dir() -> Path:
    """The installed config/ (share/rotvla_ros/config), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("rotvla_ros")) / "config"
    except (ImportError, LookupError):
        return Path(__file__).resolve().parents[1] / "config"  # src/rotvla_ros/config -> config/


def default_checkpoint(task: str) -> str:
    """What the simulated bringup serves when no checkpoint is named: the task's shipped
    simulation checkpoint (models/sim-<task>, installed with the package), else the
    random-weight test checkpoint the set-up writes (models/tiny-random); empty if neither."""
    try:
        from ament_index_python.packages import get_package_share_directory

        roots = [Path(get_package_share_directory("rotvla_ros")) / "models"]
    except (ImportError, LookupError):
        roots = []
    roots.append(Path(__file__).resolve().parents[1] / "models")  # src/rotvla_ros/models -> models/
    for name in (f"sim-{task}", "tiny-random"):
        for root in roots:
            if (root / name / "model.safetensors").is_file():
                return str((root / name).resolve())
    return ""


def parameter_files(config_dir: Path, args: SystemArgs) -> list[Path]:
    if args.task not in TASK_NAMES:
        raise ValueError(f"task must be one of {TASK_NAMES}, not {args.task!r}")
    files = [config_dir / "robot.yaml"]
    if args.sim:
        files.append(config_dir / "sim.yaml")
    if args.params_file:
        files.append(Path(args.params_file))
    return files


def node_set(args: SystemArgs) -> list[NodeSpec]:
    """The nodes of the system (cameras on hardware come from realsense2_camera's launch)."""
    executor = {"control_source": "teleop"} if args.expert else {}
    executor.update({f"{arm}.can_port": port for arm, port in args.can_ports.items()})
    if args.dry_run:
        executor["dry_run"] = True
    if args.executor_state != ACTIVE:
        executor["initial_state"] = args.executor_state
    checkpoint = args.checkpoint or (default_checkpoint(args.task) if args.sim else "")
    policy = {"checkpoint": checkpoint} if checkpoint else {}
    policy["instruction"] = args.instruction or TASKS[args.task].instruction
    if args.device:
        policy["device"] = args.device
    nodes = []
    if args.sim:
        nodes.append(
            NodeSpec(
                "sim",
                "rotvla_ros",
                "sim_node",
                "rotvla_ros.nodes.sim_node:SimNode",
                {"task": args.task, "seed": args.seed, "expert": args.expert or args.operator, "shift": args.shift},
                required=True,
            )
        )
    nodes += [
        NodeSpec(
            "arx_r5_executor",
            "arx_r5_driver",
            "executor",
            "arx_r5_driver.executor_node:ExecutorNode",
            executor,
            required=True,
        ),
        NodeSpec(
            "camera_ingestion",
            "rotvla_ros",
            "camera_ingestion",
            "rotvla_ros.nodes.camera_ingestion:CameraIngestionNode",
        ),
    ]
    if args.policy:
        nodes.append(
            NodeSpec(
                "policy",
                "rotvla_ros",
                "policy_node",
                "rotvla_ros.nodes.policy_node:PolicyNode",
                policy,
                threads=2,
                own_process=True,
                required=True,
                stop_timeout=20.0,
            )
        )
    if args.record_episodes:
        nodes.append(
            NodeSpec(
                "episode_recorder",
                "rotvla_ros",
                "episode_recorder",
                "rotvla_ros.nodes.episode_recorder:EpisodeRecorder",
                threads=2,
            )
        )
    if args.status:
        nodes.append(
            NodeSpec(
                "status_monitor",
                "rotvla_ros",
                "status_monitor",
                "rotvla_ros.nodes.status_monitor:StatusMonitor",
                {"overwrite_line": True} if args.status_overwrite else {},
            )
        )
    return nodes


def realsense_arguments(camera: str, serial: str, namespace: str = topics.CAMERAS) -> dict[str, str]:
    """Launch arguments of realsense2_camera's rs_launch.py for one D405 (colour only)."""
    arguments = {
        "camera_name": camera,
        "camera_namespace": namespace,
        # The D405 has no RGB module: its colour stream comes from the depth module.
        "depth_module.color_profile": "640x480x30",
        "enable_color": "true",
        "enable_depth": "false",
        "enable_infra1": "false",
        "enable_infra2": "false",
    }
    if serial:
        arguments["serial_no"] = f"_{serial}"  # the leading _ keeps it a string through launch
    return arguments
