#!/usr/bin/env bash
# The main job. Run through `make run`, which sets up and sources the environment first.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[run] the simulated stack is not there yet; running the smallest real thing that exists:"
echo "[run] a publisher/service process and a subscriber/client exchanging every rotvla_msgs type over DDS."
exec python -m pytest -q -p no:cacheprovider tests/test_messages_dds.py
