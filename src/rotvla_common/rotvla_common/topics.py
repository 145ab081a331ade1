"""Every topic and service name of the stack, defined once.

Names are relative: ROS resolves them in the node's namespace (the root one by default, where
``rotvla/action_chunk`` is ``/rotvla/action_chunk``), so a stack can be pushed into a namespace
without editing a node. Bags record, and the converter reads, names as they resolve in the root
namespace: ``absolute``.
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
EXECUTOR_STATUS = "rotvla/executor_status"
EEF_POSE = "rotvla/eef_pose"  # one topic per arm: eef_pose(arm)
TELEOP_JOINT_TARGETS = "rotvla/teleop/joint_targets"
ESTOP = "rotvla/estop"
RESUME = "rotvla/resume"

# The episode recorder
RECORDER_START = "rotvla/recorder/start"
RECORDER_STOP = "rotvla/recorder/stop"
RECORDER_DISCARD = "rotvla/recorder/discard"

# The simulated cell
SIM_JOINT_STATES = "sim/joint_states"
SIM_JOINT_COMMANDS = "sim/joint_commands"
SIM_TASK_SUCCESS = "sim/task_success"
SIM_RESET = "sim/reset"


def eef_pose(arm: str) -> str:
    return f"{EEF_POSE}/{arm}"


def absolute(name: str) -> str:
    """The name as it resolves in the root namespace (what a bag records)."""
    return name if name.startswith("/") else "/" + name
