"""Control-loop timing of the executor node at 200 Hz (simulated arms, wall clock): how late
each cycle wakes relative to its schedule (p50/p99/max over the last 10 s, from the node's
own /diagnostics), and cycles missed. Target: p99 <= 1 ms.

Two loads, each with the control thread at the default scheduler and at SCHED_FIFO 80, each
process on its own as deployed: the executor alone, then with the policy
stack running beside it (test-pattern cameras 424x240 at 30 fps -> camera ingestion -> the
policy node serving the tiny checkpoint, publishing chunks to the executor).
Usage: python benchmarks/bench_control_jitter.py [--seconds 15]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

ROOT = HERE.parent
STACK = [
    ["-m", "rotvla_ros.nodes.pattern_cameras", "--ros-args", "-p", "width:=424", "-p", "height:=240"],
    ["-m", "rotvla_ros.nodes.camera_ingestion", "--ros-args", "-p", "require_state:=false"],
    ["-m", "rotvla_ros.nodes.policy_node", "--ros-args", "-p", f"checkpoint:={ROOT / 'models' / 'tiny-random'}"],
]
# The executor on simulated arms, with the robot's mounts and limits (it refuses to start without them).
EXECUTOR = [
    "-m",
    "arx_r5_driver.executor_node",
    "--ros-args",
    "--params-file",
    str(ROOT / "config" / "robot.yaml"),
    "-p",
    "arx_r5_executor:backend:=sim",
]


def measure(seconds: float, with_policy: bool, priority: int) -> dict[str, str]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node

    executor = [*EXECUTOR, "-p", f"arx_r5_executor:realtime_priority:={priority}"]
    processes = [subprocess.Popen([sys.executable, *executor], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    if with_policy:
        processes += [
            subprocess.Popen([sys.executable, *a], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in STACK
        ]
    node = Node("bench_control_jitter")
    latest: dict[str, str] = {}
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: [
            latest.update({kv.key: kv.value for kv in s.values}) for s in m.status if s.name == "rotvla/executor"
        ],
        10,
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=20)
    node.destroy_node()
    return latest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    import rclpy

    rclpy.init()
    rows = []
    for label, with_policy, priority in (
        ("executor alone", False, 0),
        ("with cameras, ingestion, policy", True, 0),
        ("executor alone, SCHED_FIFO 80", False, 80),
        ("with cameras, ingestion, policy, SCHED_FIFO 80", True, 80),
    ):
        values = measure(args.seconds, with_policy, priority)
        rows.append(
            [
                label,
                values.get("wake_lateness_p50_ms", "?"),
                values.get("wake_lateness_p99_ms", "?"),
                values.get("wake_lateness_max_ms", "?"),
                values.get("overruns", "?"),
                values.get("chunks_accepted", "?"),
                values.get("chunks_rejected", "?"),
                values.get("last_rejection", "")[:60],
            ]
        )
    rclpy.try_shutdown()
    print_table(
        "Executor control loop at 200 Hz: wake-up lateness (ms, last 10 s)",
        ["load", "p50", "p99", "max", "missed cycles", "chunks accepted", "chunks rejected", "last rejection"],
        rows,
        [
            "Target: p99 <= 1 ms. Each node in its own process; the executor's loop is a Python thread; "
            "SCHED_FIFO: the executor's realtime_priority parameter (it needs the right to raise it)."
        ],
    )


if __name__ == "__main__":
    main()
