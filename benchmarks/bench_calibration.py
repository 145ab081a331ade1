"""rotvla_calibrate_latency against latencies injected on purpose (issue 31's target: recovered
within 5 ms in simulation).

The simulated cell runs as ``rotvla_run --no-policy`` (sim node, executor, camera ingestion);
for each pair of injected delays the sim node is given them (``camera_delay``,
``command_delay``, settable while it runs) and ``rotvla_calibrate_latency`` runs as a user
runs it. The camera's latency is read directly (the simulated cameras add none of their own);
the arm's against the first row's (the link's fixed delay, the servo's own response and the
controller's cycle make up the arm's latency with nothing injected).
Usage: python benchmarks/bench_calibration.py [--frequency 1.0] [--periods 6]"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

INJECTED = [(0.0, 0.0), (0.02, 0.01), (0.04, 0.03), (0.08, 0.06), (0.15, 0.12)]  # (camera, command) s
# The simulated arm's command link (the sim node's command_delay) in every row, the injected
# command delay on top: longer than the cell's own topic round trip, which it then hides (that
# round trip, a few to tens of ms of sim time, changes from run to run on a loaded machine).
LINK_DELAY = 0.05
REPEATS = 3  # each row measured this many times: one run's noise is several ms


def measured(output: str, name: str) -> float:
    match = re.search(rf"^{name}\s+(-?[\d.]+) ms", output, re.MULTILINE)
    if not match:
        raise RuntimeError(output)
    return float(match.group(1)) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frequency", default="1.0")
    parser.add_argument("--periods", default="6")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(110, 200)))
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    stack = subprocess.Popen(
        [sys.executable, "-m", "rotvla_ros.nodes.runner", "--no-policy", "--seconds", "1800"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    calibrate = [
        sys.executable,
        "-m",
        "rotvla_ros.nodes.calibrate_latency",
        "--frequency",
        args.frequency,
        "--periods",
        args.periods,
    ]
    readings: dict[int, list[tuple[float, float]]] = {row: [] for row in range(len(INJECTED))}

    def run(camera: float, command: float) -> tuple[float, float]:
        for name, value in (("camera_delay", camera), ("command_delay", LINK_DELAY + command)):
            deadline = time.monotonic() + 120
            while subprocess.run(["ros2", "param", "set", "/sim", name, str(value)], capture_output=True).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("the simulated cell does not answer")
                time.sleep(2)
        done = subprocess.run(calibrate, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(done.stdout + done.stderr)
        return measured(done.stdout, "camera"), measured(done.stdout, "arm_command")

    try:
        run(*INJECTED[0])  # the first motion after the stack starts, while its nodes settle: not counted
        for repeat in range(REPEATS):  # rows interleaved, so that a drift of the machine spreads over all
            for row, (camera, command) in enumerate(INJECTED):
                readings[row].append(run(camera, command))
                print(repeat, row, readings[row][-1], flush=True)
    finally:
        stack.terminate()
        stack.wait(timeout=30)
    base_arm = np.mean([arm for _, arm in readings[0]])

    def spread(values: np.ndarray) -> str:
        return f"{values.mean() * 1000:.1f} ({values.min() * 1000:.1f} to {values.max() * 1000:.1f})"

    rows = []
    for row, (camera, command) in enumerate(INJECTED):
        cameras, arms = (np.array(values) for values in zip(*readings[row]))
        rows.append(
            [
                f"{camera * 1000:.0f}",
                spread(cameras),
                f"{(cameras.mean() - camera) * 1000:+.1f}",
                f"{command * 1000:.0f}",
                spread(arms - base_arm),
                f"{(arms.mean() - base_arm - command) * 1000:+.1f}",
                f"{arms.mean() * 1000:.1f}",
            ]
        )
    print_table(
        "rotvla_calibrate_latency on the simulated cell: injected latencies recovered (ms)",
        [
            "camera injected",
            "measured: mean (range)",
            "error of the mean",
            "command injected",
            "measured over row 1: mean (range)",
            "error of the mean",
            "arm total",
        ],
        rows,
        [
            f"excitation: +-2 cm along y of the left arm at {args.frequency} Hz, {args.periods} periods fitted",
            f"{REPEATS} runs per row, rows interleaved; the arm's link {LINK_DELAY * 1000:.0f} ms in every row",
        ],
    )


if __name__ == "__main__":
    main()
