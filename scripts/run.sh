#!/usr/bin/env bash
# The main job, through `make run` (which sets up and sources the environment first): the
# whole stack on the simulated cell, in one process (`rotvla_run`, the composed runner: the
# same nodes and parameter files as `ros2 launch rotvla_ros bringup.launch.py sim:=true`):
# the MuJoCo cell (dual R5, the task's objects, three rendered D405 views, /clock) ->
# camera ingestion -> the policy node serving the embedded tiny checkpoint (random weights:
# real inference, meaningless motion) -> the ARX R5 executor commanding the simulated arms
# -> a live one-line status. Everything runs on sim time.
#
#   make run                                   until Ctrl-C
#   make run ARGS="--seconds 60"               for a fixed time
#   make run ARGS="--task cup_stacking"        another task
#   make run ARGS="--expert"                   the scripted expert drives instead (demos)
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=${ROTVLA_CHECKPOINT:-models/tiny-random}
mkdir -p log/run
echo "[run] simulated cell | policy: $checkpoint | Ctrl-C stops everything; ROS logs in log/run/"
export ROS_LOG_DIR=${ROS_LOG_DIR:-$PWD/log/run}
exec rotvla_run --checkpoint "$checkpoint" "$@"
