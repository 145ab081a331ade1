"""Live checkpoint swaps while observations stream at the policy rate: how long does the
chunk stream pause? Target: no gap longer than two policy periods.

The policy node (tiny checkpoints, CPU) and an observation streamer that times the chunks
each run in a process of their own, as deployed; this process swaps checkpoints through
/rotvla/load_checkpoint every ``--interval`` seconds. Usage:
python benchmarks/bench_live_swap.py [--swaps 10] [--rate 10] [--interval 1.5]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import percentiles, print_table  # noqa: E402

STREAMER = HERE.parent / "tests" / "peers" / "observation_streamer.py"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="policy rate, Hz")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between swaps (0: back to back)")
    parser.add_argument(
        "--min-swap-interval", type=float, default=0.0, help="the node's min_swap_interval (0: every swap is served)"
    )
    args = parser.parse_args()

    import rclpy
    import torch
    from rclpy.node import Node

    from rotvla_msgs.srv import LoadCheckpoint
    from rotvla_ros.model.config import tiny_config
    from rotvla_ros.policy import RotVLAPolicy

    root = Path(tempfile.mkdtemp())
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        RotVLAPolicy.from_config(tiny_config(), device="cpu").save_pretrained(root / name)
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotvla_ros.nodes.policy_node",
            "--ros-args",
            "-p",
            f"checkpoint:={root / 'a'}",
            "-p",
            "device:=cpu",
            "-p",
            f"min_swap_interval:={args.min_swap_interval}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = args.swaps * max(args.interval, 1.0) + 3  # back to back, a swap takes well under a second
    streamer = subprocess.Popen(
        [sys.executable, str(STREAMER), str(args.rate), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert "ready" in streamer.stdout.readline()
    rclpy.init()
    client_node = Node("bench_live_swap")
    client = client_node.create_client(LoadCheckpoint, "/rotvla/load_checkpoint")
    assert client.wait_for_service(timeout_sec=30)
    swaps = []  # (start, end, load s, warm-up s)
    time.sleep(1.0)
    for i in range(args.swaps):
        start = time.monotonic()
        future = client.call_async(LoadCheckpoint.Request(path=str(root / "ba"[i % 2])))
        rclpy.spin_until_future_complete(client_node, future, timeout_sec=60)
        reply = future.result()
        assert reply.success, reply.message
        swaps.append((start, time.monotonic(), reply.load_seconds, reply.warmup_seconds))
        time.sleep(max(0.0, args.interval - (time.monotonic() - start)))
    records = [json.loads(line) for line in streamer.stdout if line.startswith("{")]
    streamer.wait()
    node.terminate()
    node.wait(timeout=15)
    client_node.destroy_node()
    rclpy.try_shutdown()

    times = np.array([r["t"] for r in records])
    gaps = np.diff(times)
    period = 1.0 / args.rate
    # A gap "during a swap" overlaps a swap call (from its request to its reply).
    during = np.array(
        [any(t0 < s_end and t1 > s_start for s_start, s_end, *_ in swaps) for t0, t1 in zip(times[:-1], times[1:])]
    )
    rows = []
    for name, values in (
        ("all gaps", gaps),
        ("gaps overlapping a swap", gaps[during]),
        ("gaps outside swaps", gaps[~during]),
    ):
        p50, p99, _ = percentiles(values)
        rows.append(
            [
                name,
                len(values),
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{values.max() * 1e3:.1f}",
                int((values > 2 * period).sum()),
            ]
        )
    load = percentiles([s[2] for s in swaps])
    warm = percentiles([s[3] for s in swaps])
    call = percentiles([s[1] - s[0] for s in swaps])
    print_table(
        f"Chunk stream during {args.swaps} live swaps at {args.rate:g} Hz (gaps in ms)",
        ["", "count", "p50", "p99", "max", f"> {2 * period * 1e3:.0f} ms (2 periods)"],
        rows,
        [
            f"swap call p50/p99 {call[0]:.0f}/{call[1]:.0f} ms; load {load[0]:.0f}/{load[1]:.0f} ms; "
            f"warm-up {warm[0]:.0f}/{warm[1]:.0f} ms (p50/p99).",
            "Target: no gap longer than two policy periods.",
        ],
    )


if __name__ == "__main__":
    main()
