"""Policy latency per stage: tiny on the CPU, and rotvla-1.7b (random weights, bf16, three
224x224 views, 10 denoising steps) on a GPU when one is present (target <= 30 ms/chunk on
an H100). Usage: python benchmarks/bench_policy_latency.py [--runs N] [--full-on-cpu]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentiles, print_table  # noqa: E402

from rotvla_ros.model.config import RotVLAConfig, tiny_config  # noqa: E402
from rotvla_ros.policy import RotVLAPolicy  # noqa: E402


def measure(config, device, dtype, runs):
    torch.manual_seed(0)
    policy = RotVLAPolicy.from_config(config, device=device, dtype=dtype)
    policy.warmup(passes=3)
    obs = policy.dummy_observation("put the yellow cup into the red cup, then the green cup into the yellow cup")
    timings = [policy.predict(obs, seed=i).timings for i in range(runs)]
    steps = [t[f"denoise_step_{s}"] for t in timings for s in range(config.flow.num_steps)]
    row = [config.preset, device, dtype, runs]
    for values in (
        [t["preprocess"] for t in timings],
        [t["vl_prefix"] for t in timings],
        steps,
        [t["total"] for t in timings],
    ):
        p50, p99, _ = percentiles(values)
        row += [f"{p50:.2f} / {p99:.2f}"]
    memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.startswith("cuda") else "-"
    return row + [memory]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--full-on-cpu", action="store_true", help="also time rotvla-1.7b on the CPU (slow)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [measure(tiny_config(), "cpu", "float32", args.runs)]
    notes = []
    if torch.cuda.is_available():
        rows.append(measure(tiny_config(), "cuda", "bfloat16", args.runs))
        rows.append(measure(RotVLAConfig(), "cuda", "bfloat16", args.runs))
    else:
        notes.append("rotvla-1.7b on GPU: not measured, no CUDA device on this machine.")
    if args.full_on_cpu:
        rows.append(measure(RotVLAConfig(), "cpu", "float32", max(3, args.runs // 10)))
    print_table(
        "Policy latency per chunk (ms, p50 / p99)",
        ["preset", "device", "dtype", "runs", "preprocess", "VL prefix", "each denoise step", "total", "GPU GiB"],
        rows,
        notes + ["Three camera views, 10 Euler steps, the VL prefix computed once per chunk."],
    )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
