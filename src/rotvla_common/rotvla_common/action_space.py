"""The robot action space of the paper's finetuning, by name (plain data, no ROS, no torch).

Per arm: xyz (m, in that arm's base frame) + Rotate6D (first two columns of the rotation
matrix, column-major) + gripper opening (m); left arm first: 20 numbers per step.
"""

ARMS = ("left", "right")
POSITION_FIELDS = ("x", "y", "z")
# Rotate6D: the rotation matrix's first two columns, column-major.
ROT6D_FIELDS = ("r11", "r21", "r31", "r12", "r22", "r32")
GRIPPER_FIELD = "gripper"
ARM_ACTION_FIELDS = (*POSITION_FIELDS, *ROT6D_FIELDS, GRIPPER_FIELD)
DUAL_ARM_EEF_ACTION_NAMES = tuple(f"{arm}/{name}" for arm in ARMS for name in ARM_ACTION_FIELDS)

# The robot's cameras, in the order of every observation and of a checkpoint's views.
CAMERA_NAMES = ("head", "left_wrist", "right_wrist")
