#!/usr/bin/env bash
# The main job, through `make run` (which sets up and sources the environment first).
#
# Until the MuJoCo simulation of the dual R5 lands, this runs the part of the stack that
# exists, for real, each node in its own process over DDS: test-pattern cameras (three
# 424x240 streams at 30 fps, a D405 colour profile, on realsense2_camera's topics; three
# 640x480 streams saturate a 2-core machine in Python) -> camera ingestion -> the
# policy node serving the embedded tiny checkpoint (random weights: the chunks are real
# inference, not meaningful motion) -> the ARX R5 executor on simulated arms (first-order
# joints, no MuJoCo scene yet) -> a live one-line status.
#
#   make run                      until Ctrl-C
#   make run ARGS="--seconds 20"  for a fixed time
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=""
if [ "${1:-}" = "--seconds" ]; then seconds=$2; fi
checkpoint=${ROTVLA_CHECKPOINT:-models/tiny-random}

logs=log/run
mkdir -p "$logs"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "[run] stopped; node logs in $logs/"
}
trap cleanup INT TERM EXIT

echo "[run] cameras: test pattern | ingestion | policy: $checkpoint (cpu unless CUDA) | executor: simulated arms"
python -m rotvla_ros.nodes.test_pattern_cameras --ros-args -p width:=424 -p height:=240 >"$logs/cameras.log" 2>&1 & pids+=($!)
python -m arx_r5_driver.executor_node >"$logs/executor.log" 2>&1 & pids+=($!)
python -m rotvla_ros.nodes.camera_ingestion >"$logs/ingestion.log" 2>&1 & pids+=($!)
python -m rotvla_ros.nodes.policy_node --ros-args -p checkpoint:="$checkpoint" >"$logs/policy.log" 2>&1 & pids+=($!)
python -m rotvla_ros.nodes.status_monitor & pids+=($!)
if [ -n "$seconds" ]; then
  sleep "$seconds"
else
  wait
fi
