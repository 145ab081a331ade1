"""rotvla_calibrate_latency against latencies injected on purpose (issue 31's target: recovered
within 5 ms in simulation).

The simulated cell runs as ``rotvla_run --no-policy`` (sim node, executor, camera ingestion);
for each pair of injected delays the sim node is given them (``camera_delay``,
``command_delay``, settable while it runs) and ``rotvla_calibrate_latency`` runs as a user
runs it. The camera's latency is read directly (the simulated cameras add none of their own);
the arm's against the first row's (the servo's own response and the topic round trip are the
arm's latency with nothing injected).
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

INJECTED = [(0.0, 0.0), (0.02, 0.01), (0.04, 0.03), (0.08, 0.06), (0.15, 0.12)]  # (camera, command) s


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
    rows, base_arm = [], None
    try:
        for camera, command in INJECTED:
            for name, value in (("camera_delay", camera), ("command_delay", command)):
                deadline = time.monotonic() + 120
                setting = ["ros2", "param", "set", "/sim", name, str(value)]
                while subprocess.run(setting, capture_output=True).returncode:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the simulated cell does not answer")
                    time.sleep(2)
            done = subprocess.run(calibrate, capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise RuntimeError(done.stdout + done.stderr)
            found_camera, found_arm = measured(done.stdout, "camera"), measured(done.stdout, "arm_command")
            base_arm = found_arm if base_arm is None else base_arm
            rows.append(
                [
                    f"{camera * 1000:.0f}",
                    f"{found_camera * 1000:.1f}",
                    f"{(found_camera - camera) * 1000:+.1f}",
                    f"{command * 1000:.0f}",
                    f"{(found_arm - base_arm) * 1000:.1f}",
                    f"{(found_arm - base_arm - command) * 1000:+.1f}",
                    f"{found_arm * 1000:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    finally:
        stack.terminate()
        stack.wait(timeout=30)
    print_table(
        "rotvla_calibrate_latency on the simulated cell: injected latencies recovered (ms)",
        ["camera injected", "measured", "error", "command injected", "measured (over row 1)", "error", "arm total"],
        rows,
        [f"excitation: +-2 cm along y of the left arm at {args.frequency} Hz, {args.periods} periods fitted"],
    )


if __name__ == "__main__":
    main()
