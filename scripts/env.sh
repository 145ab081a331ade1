# Source after scripts/setup.sh: the venv, the system ROS 2 (if any) and the workspace overlay.
#   source scripts/env.sh
_rotvla_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_rotvla_venv=${ROTVLA_VENV:-$_rotvla_root/.venv}
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
  # shellcheck disable=SC1090
  source "/opt/ros/$ROS_DISTRO/setup.bash"
fi
# shellcheck disable=SC1091
source "$_rotvla_venv/bin/activate"
# The overlay's setup scripts read unset variables; keep them out of `set -u` shells.
case $- in *u*) set +u; _rotvla_nounset=1 ;; esac
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$_rotvla_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
# shellcheck disable=SC1091
source "$_rotvla_root/install/setup.bash"
# The real launch system's message package, where setup.sh installed the kit (ros2 launch).
if [ -f "$_rotvla_root/build/ros2-launch/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_rotvla_root/build/ros2-launch/install/local_setup.bash"
fi
# The packages' executables (rotvla_ctl, the nodes), as `ros2 run` would find them.
export PATH="$_rotvla_root/install/rotvla_ros/lib/rotvla_ros:$_rotvla_root/install/arx_r5_driver/lib/arx_r5_driver:$PATH"
[ -n "${_rotvla_nounset:-}" ] && set -u
unset _rotvla_root _rotvla_venv _rotvla_nounset
