"""Stand-in for realsense2_camera's rs_launch.py (see tests/stand_ins/README.md): the arguments
the bringup passes, logged as one line; no camera starts."""

from launch.actions import DeclareLaunchArgument, LogInfo
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

ARGUMENTS = (
    "camera_name",
    "camera_namespace",
    "serial_no",
    "depth_module.color_profile",
    "enable_color",
    "enable_depth",
    "enable_infra1",
    "enable_infra2",
)


def generate_launch_description():
    message = ["stand-in rs_launch:"]
    for name in ARGUMENTS:
        message += [f" {name}=", LaunchConfiguration(name)]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value="''") for name in ARGUMENTS] + [LogInfo(msg=message)]
    )
