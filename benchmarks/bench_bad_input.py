"""How many bad chunks a second the executor can refuse while it holds its 200 Hz loop.

The executor node (simulated arms, config/robot.yaml) runs in a process of its own, as
deployed; this process floods /rotvla/action_chunk with chunks the executor must refuse (NaN,
an unknown layout, an oversized chunk, a stamp from the future, by turns) at increasing
rates, and reads back what the executor counted and its control loop's wake-up lateness
(/diagnostics). Usage: python benchmarks/bench_bad_input.py [--seconds 5]
"""

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per offered rate")
    parser.add_argument("--rates", default="100,500,1000,2000,5000", help="offered chunks per second")
    args = parser.parse_args()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rotvla_msgs.msg import ActionChunk, ExecutorStatus

    from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES
    from rotvla_common.ros import RELIABLE_QOS, to_duration, to_time

    executor_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arx_r5_driver.executor_node",
            "--ros-args",
            "--params-file",
            str(ROOT / "config" / "robot.yaml"),
            "-p",
            "arx_r5_executor:backend:=sim",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = Node("bench_bad_input")
    spin = SingleThreadedExecutor()
    spin.add_node(node)
    statuses, diagnostics = [], []
    node.create_subscription(ExecutorStatus, "/rotvla/executor_status", statuses.append, RELIABLE_QOS)
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.extend(s for s in m.status if s.name == "rotvla/executor"),
        RELIABLE_QOS,
    )
    publisher = node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            spin.spin_once(timeout_sec=0.001)

    deadline = time.monotonic() + 60
    while not statuses and time.monotonic() < deadline:
        spin_for(0.1)
    rng = np.random.default_rng(0)

    def bad_chunk(k: int) -> ActionChunk:
        now = node.get_clock().now().nanoseconds * 1e-9
        kind = k % 4
        horizon = 20 if kind != 2 else 5000
        names = list(NAMES) if kind != 1 else [f"x{i}" for i in range(20)]
        values = rng.normal(size=horizon * 20).astype(np.float32)
        if kind == 0:
            values[7] = np.nan
        msg = ActionChunk(horizon=horizon, action_names=names, actions=values.tolist(), sequence=k)
        msg.header.stamp = to_time(now + (5.0 if kind == 3 else 0.0))
        msg.dt = to_duration(0.05)
        return msg

    rows = []
    prepared = [bad_chunk(k) for k in range(64)]
    for rate in (float(r) for r in args.rates.split(",")):
        before = statuses[-1].chunks_rejected
        diagnostics.clear()
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < args.seconds:
            due = int((time.monotonic() - start) * rate)
            while sent < due:
                publisher.publish(prepared[sent % len(prepared)])
                sent += 1
            spin.spin_once(timeout_sec=0.0005)
        elapsed = time.monotonic() - start
        spin_for(1.5)  # the last status and a diagnostics message with this period's lateness
        refused = statuses[-1].chunks_rejected - before
        values = {kv.key: kv.value for kv in diagnostics[-1].values} if diagnostics else {}
        rows.append(
            [
                f"{rate:g}",
                f"{sent / elapsed:.0f}",
                f"{refused / elapsed:.0f}",
                values.get("wake_lateness_p99_ms", "?"),
                values.get("wake_lateness_max_ms", "?"),
                values.get("overruns", "?"),
            ]
        )
    executor_process.terminate()
    executor_process.wait(timeout=15)
    node.destroy_node()
    rclpy.try_shutdown()
    print_table(
        f"Bad chunks refused while the 200 Hz loop runs ({args.seconds:g} s per rate)",
        ["offered /s", "sent /s", "refused /s", "wake lateness p99 (ms)", "max (ms)", "overruns (total)"],
        rows,
        [
            "Bad chunks by turns: NaN, unknown layout, 5000 steps (too long), stamped 5 s ahead. Lateness over"
            " the last 10 s of the executor's loop (its /diagnostics)."
        ],
    )


if __name__ == "__main__":
    main()
