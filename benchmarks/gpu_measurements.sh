#!/usr/bin/env bash
# Issue 16's GPU measurements in one run, on any machine with one CUDA GPU, PyTorch and
# transformers (no ROS: the model and policy import none). Writes the tables and the
# environment to OUT_DIR (default benchmarks/results):
#   [DATASET=dir] bash benchmarks/gpu_measurements.sh [OUT_DIR] [extra bench_policy_latency.py arguments]
# With DATASET (a LeRobot v3 dataset, e.g. rotvla_convert's), also the training throughput and
# peak memory of rotvla-1.7b per stage (issue 14; needs pyarrow and PyAV there too).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/benchmarks/results}
shift || true
mkdir -p "$out"
export PYTHONPATH="$root/src/rotvla_ros:$root/src/rotvla_common${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python3 - <<'PY' | tee "$out/gpu_environment.txt"
import platform

import torch
import transformers

print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs")
PY
python3 "$root/benchmarks/bench_policy_latency.py" --runs 50 --output "$out/policy_latency.md" "$@"
if [ -n "${DATASET:-}" ]; then
  python3 "$root/benchmarks/bench_training.py" --dataset "$DATASET" --presets rotvla-1.7b --device cuda \
    --batch-size 8 --steps 10 | tee "$out/training.md"
fi
