"""Every topic and service name of the stack, defined once.

Names are relative: ROS resolves them in the node's namespace (the root one by default, where
``rotvla/action_chunk`` is ``/rotvla/action_chunk``), so a whole cell can be pushed into a
namespace without editing a node (``cell_ros_arguments``). Two names stay absolute, as ROS
convention has them: ``/diagnostics`` (one aggregator for the machine; a status says whose it
is by its ``hardware_id``, the node's full name) and ``/clock``, which rclpy's time source
subscribes to by that name and which a namespaced cell therefore remaps. Bags record, and the
converter reads, names as they resolve in the root namespace: ``absolute``.
"""

from __future__ import annotations

# The policy's side
OBSERVATION = "rotvla/observation"
ACTION_CHUNK = "rotvla/action_chunk"
PLANNED_PATH = "rotvla/planned_path"
INSTRUCTION = "rotvla/instruction"  # latched: the instruction in force
LOAD_CHECKPOINT = "rotvla/load_checkpoint"
SET_INSTRUCTION = "rotvla/set_instruction"

# The executor's side
JOINT_STATES = "joint_states"  # both arms' joints and grippers, measured (robot_state_publisher's name)
EXECUTOR_STATUS = "rotvla/executor_status"
EEF_POSE = "rotvla/eef_pose"  # one topic per arm: eef_pose(arm)
TELEOP_JOINT_TARGETS = "rotvla/teleop/joint_targets"
# What the operator meant, where that differs from what is executed (perturbed demonstrations):
# the converter's label with --action-label intended.
TELEOP_INTENDED = "rotvla/teleop/intended_joint_targets"
ESTOP = "rotvla/estop"
RESUME = "rotvla/resume"
DRY_RUN_COMMANDS = "rotvla/dry_run/joint_commands"  # what a dry run would send, both arms
SET_CONTROL_SOURCE = "rotvla/set_control_source"  # policy <-> teleop at run time (a pedal, a key)
CONTROL_SOURCE = "rotvla/control_source"  # latched: who drives (recorded with each episode)

# The episode recorder
RECORDER_START = "rotvla/recorder/start"
RECORDER_STOP = "rotvla/recorder/stop"
RECORDER_DISCARD = "rotvla/recorder/discard"

# The cameras: realsense2_camera's <camera_namespace>/<camera>/<stream>
CAMERAS = "cameras"

# The simulated cell
SIM_JOINT_STATES = "sim/joint_states"
SIM_JOINT_COMMANDS = "sim/joint_commands"
SIM_TASK_SUCCESS = "sim/task_success"
SIM_RESET = "sim/reset"
SIM_PAUSE = "sim/pause"  # std_srvs/SetBool: sim time stops (and every node on it idles) while true


# Absolute by convention (see the module docstring)
CLOCK = "/clock"
DIAGNOSTICS = "/diagnostics"


def eef_pose(arm: str) -> str:
    return f"{EEF_POSE}/{arm}"


def absolute(name: str) -> str:
    """The name as it resolves in the root namespace (what a bag records)."""
    return name if name.startswith("/") else "/" + name


def normalise_namespace(namespace: str) -> str:
    """'' (the root) or '/a/b' without a trailing slash; ValueError for a name ROS refuses."""
    namespace = namespace.strip().rstrip("/")
    if not namespace:
        return ""
    namespace = namespace if namespace.startswith("/") else "/" + namespace
    parts = namespace[1:].split("/")
    if not all(part and (part[0].isalpha() or part[0] == "_") and part.replace("_", "a").isalnum() for part in parts):
        raise ValueError(f"{namespace!r} is not a ROS namespace (letters, digits and _, not starting with a digit)")
    return namespace


def cell_ros_arguments(namespace: str) -> list[str]:
    """The ROS arguments that put every node of a process into ``namespace``: its relative
    names there, and its sim time from the cell's own clock (``<namespace>/clock``)."""
    namespace = normalise_namespace(namespace)
    if not namespace:
        return []
    return ["-r", f"__ns:={namespace}", "-r", f"{CLOCK}:={namespace}{CLOCK}"]
