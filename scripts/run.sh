#!/usr/bin/env bash
# The main job, through `make run` (which sets up and sources the environment first): the
# whole stack on the simulated cell, in one process (`rotvla_run`, the composed runner: the
# same nodes and parameter files as `ros2 launch rotvla_ros bringup.launch.py sim:=true`):
# the MuJoCo cell (dual R5, the task's objects, three rendered D405 views, /clock) ->
# camera ingestion -> the policy node serving the shipped simulation checkpoint of the task
# (models/sim-<task>) -> the ARX R5 executor commanding the simulated arms -> a live status.
# Everything runs on sim time.
#
#   make run                                   until Ctrl-C
#   make run ARGS="--seconds 60"               for a fixed time
#   make run ARGS="--task cup_stacking"        another task
#   make run ARGS="--expert"                   the scripted expert drives instead (demos)
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkpoint: $ROTVLA_CHECKPOINT, else the task's shipped one (models/sim-<task>), else the
# random-weight models/tiny-random (rotvla_ros.bringup.default_checkpoint).
mkdir -p log/run
echo "[run] simulated cell | policy: ${ROTVLA_CHECKPOINT:-models/sim-<task> (else models/tiny-random)} | Ctrl-C stops everything; ROS logs in log/run/"
export ROS_LOG_DIR=${ROS_LOG_DIR:-$PWD/log/run}
exec rotvla_run ${ROTVLA_CHECKPOINT:+--checkpoint "$ROTVLA_CHECKPOINT"} "$@"
