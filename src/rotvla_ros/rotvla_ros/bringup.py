"""The one description of the running system: which nodes, from which packages, with which
parameter files and overrides. ``launch/bringup.launch.py`` turns it into launch_ros
actions; ``rotvla_run`` (nodes/runner.py) instantiates the same nodes in one process. No
rclpy here: the launch file imports it too.

Parameter files, in order (later wins): ``config/robot.yaml``, ``config/sim.yaml`` in
simulation, ``config/tasks/<task>.yaml``; then the overrides from the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES
from rotvla_common.tasks import TASK_NAMES, TASK_SPECS

# What `record:=true` records (the episode recorder of the recording issue reads the same).
RECORD_TOPICS = (
    *(topics.absolute(f"{topics.CAMERAS}/{c}/color/image_raw") for c in CAMERA_NAMES),
    *(topics.absolute(f"{topics.CAMERAS}/{c}/color/camera_info") for c in CAMERA_NAMES),
    topics.absolute(topics.JOINT_STATES),
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


@dataclass(frozen=True)
class SystemArgs:
    sim: bool = True
    task: str = "block_to_plate"
    checkpoint: str = ""
    instruction: str = ""  # empty: the task's
    device: str = ""  # empty: the files'
    seed: int = 0
    expert: bool = False  # sim: the scripted expert drives (teleop), for demos
    camera_serials: dict = field(default_factory=dict)  # camera -> serial number (hardware)
    can_ports: dict = field(default_factory=dict)  # arm -> CAN interface (hardware)
    status: bool = True  # the status monitor
    status_overwrite: bool = False  # its line rewritten in place (an interactive terminal, not launch)
    policy: bool = True  # False: recording demonstrations needs no policy
    record_episodes: bool = False  # the episode recorder node (start/stop/discard services)
    # The cell's ROS namespace (empty: the root): every node, its topics, services, cameras and
    # sim clock under it (rotvla_common.topics.cell_ros_arguments), so cells can run side by side.
    namespace: str = ""


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
    files.append(config_dir / "tasks" / f"{args.task}.yaml")
    return files


def node_set(args: SystemArgs) -> list[NodeSpec]:
    """The nodes of the system (cameras on hardware come from realsense2_camera's launch)."""
    executor = {"control_source": "teleop"} if args.expert else {}
    executor.update({f"{arm}.can_port": port for arm, port in args.can_ports.items()})
    checkpoint = args.checkpoint or (default_checkpoint(args.task) if args.sim else "")
    policy = {"checkpoint": checkpoint} if checkpoint else {}
    policy["instruction"] = args.instruction or TASK_SPECS[args.task].instruction
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
                {"seed": args.seed, "expert": args.expert},
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
