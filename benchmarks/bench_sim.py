"""The simulated cell on this machine: render time per camera, and the real-time factor
(sim seconds per wall second) with physics at 200 Hz of /clock and three cameras at the
policy rate (10 Hz). Target: RTF >= 1.0.

Rows: the cell alone (no ROS), at two image sizes; then the whole stack in one process
(`rotvla_run`, tiny policy on CPU, the executor, ingestion), paced as fast as it can go
(real_time_factor 0), its sim time read from /clock by this process.
Usage: python benchmarks/bench_sim.py [--seconds 20]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

ROOT = HERE.parent


def cell_alone(width: int, height: int, sim_seconds: float = 5.0) -> list:
    from rotvla_ros.sim.world import CAMERAS, SimWorld

    world = SimWorld("cup_stacking", 0)
    world.render("head", width, height)  # the GL context
    renders, physics = [], []
    wall = time.perf_counter()
    t = 0.0
    while t < sim_seconds:
        for _ in range(20):  # 20 x 5 ms of physics per camera frame (10 Hz)
            t += 0.005
            started = time.perf_counter()
            world.step_to(t)
            physics.append(time.perf_counter() - started)
        for camera in CAMERAS:
            started = time.perf_counter()
            world.render(camera, width, height)
            renders.append(time.perf_counter() - started)
    rtf = sim_seconds / (time.perf_counter() - wall)
    return [
        f"cell alone, {width}x{height}",
        f"{np.median(renders) * 1e3:.1f}",
        f"{np.percentile(renders, 99) * 1e3:.1f}",
        f"{np.median(physics) * 1e3:.3f}",
        f"{rtf:.2f}",
    ]


def full_stack(seconds: float) -> list:
    import rclpy
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotvla_ros.nodes.runner",
            "--checkpoint",
            str(ROOT / "models" / "tiny-random"),
            "--ros-args",
            "-p",
            "real_time_factor:=0.0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = Node("bench_sim")
    clock: list[tuple[float, float]] = []
    node.create_subscription(
        Clock, "/clock", lambda m: clock.append((time.monotonic(), m.clock.sec + m.clock.nanosec * 1e-9)), 10
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not clock or clock[-1][1] < 5.0):  # past the policy's load and warm-up
        rclpy.spin_once(node, timeout_sec=0.1)
    start = len(clock)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    runner.send_signal(2)
    runner.wait(timeout=60)
    node.destroy_node()
    rclpy.try_shutdown()
    (w0, s0), (w1, s1) = clock[start], clock[-1]
    return ["whole stack (rotvla_run), 320x240", "-", "-", "-", f"{(s1 - s0) / (w1 - w0):.2f}"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = [cell_alone(320, 240), cell_alone(224, 224), full_stack(args.seconds)]
    print_table(
        "Simulated cell: render ms per camera, physics ms per 5 ms step, real-time factor",
        ["configuration", "render p50", "render p99", "physics step p50", "RTF"],
        rows,
        [
            "3 cameras at 10 Hz of sim time, physics at 2 ms steps (5 ms per /clock tick), OSMesa on the CPU. "
            "Target: RTF >= 1.0."
        ],
    )


if __name__ == "__main__":
    main()
