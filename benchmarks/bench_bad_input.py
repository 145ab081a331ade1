"""How many bad chunks a second the executor can refuse while it holds its 200 Hz loop, and
whether a flood from another peer starves the policy.

The executor node (simulated arms, config/robot.yaml) runs in a process of its own, as
deployed, with this process as its chunk_source (the policy). Two floods at increasing rates:
- the policy gone wrong: this process sends chunks the executor must refuse after reading them
  (NaN, an unknown layout, an oversized chunk, a stamp from the future, by turns);
- another peer (tests/peers/chunk_flooder.py, a process of its own) sends well-formed chunks,
  refused unread by their sender, while this process sends the policy's every 0.2 s: the
  fraction of the policy's chunks executed.
Each row reads back what the executor counted and its control loop's wake-up lateness
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
from common import executor_command, print_table  # noqa: E402

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

    from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES
    from rotvla_common.ros import RELIABLE_QOS, to_duration, to_time
    from rotvla_msgs.msg import ActionChunk, ExecutorStatus

    executor_process = subprocess.Popen(
        # Its chunks are read (chunk_source): a policy gone wrong.
        executor_command(backend="sim", chunk_source="bench_bad_input"),
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

    from arx_r5_driver.configuration import HOME_JOINTS
    from arx_r5_driver.kinematics import ArmKinematics

    position, rotation = ArmKinematics().fk(np.array(HOME_JOINTS))
    home = np.r_[position, rotation[:, 0], rotation[:, 1], 0.04]
    policy_sequence = [10**12]

    def policy_chunk() -> ActionChunk:
        """A chunk the executor takes: the arms' home pose, stamped now."""
        policy_sequence[0] += 1
        msg = ActionChunk(horizon=8, action_names=list(NAMES), sequence=policy_sequence[0], checkpoint_id="policy")
        msg.actions = np.tile(np.r_[home, home], 8).astype(np.float32).tolist()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.dt = to_duration(0.05)
        return msg

    rows = []
    prepared = [bad_chunk(k) for k in range(64)]
    for scenario in ("policy gone wrong", "another peer"):
        for rate in (float(r) for r in args.rates.split(",")):
            before = statuses[-1].chunks_rejected
            accepted_before = statuses[-1].chunks_accepted
            diagnostics.clear()
            flooder = None
            if scenario == "another peer":
                flooder = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "tests" / "peers" / "chunk_flooder.py"),
                        f"{rate:g}",
                        f"{args.seconds:g}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert flooder.stdout.readline().strip() == "ready"
            sent, policy_sent, start, next_policy = 0, 0, time.monotonic(), 0.0
            while time.monotonic() - start < args.seconds:
                elapsed = time.monotonic() - start
                if flooder is None:
                    while sent < int(elapsed * rate):
                        publisher.publish(prepared[sent % len(prepared)])
                        sent += 1
                elif elapsed >= next_policy:
                    publisher.publish(policy_chunk())
                    policy_sent, next_policy = policy_sent + 1, next_policy + 0.2
                spin.spin_once(timeout_sec=0.0005)
            elapsed = time.monotonic() - start
            if flooder is not None:
                sent = int(flooder.communicate(timeout=30)[0].split()[-1])
            spin_for(1.5)  # the last status and a diagnostics message with this period's lateness
            refused = statuses[-1].chunks_rejected - before
            accepted = statuses[-1].chunks_accepted - accepted_before
            values = {kv.key: kv.value for kv in diagnostics[-1].values} if diagnostics else {}
            rows.append(
                [
                    scenario,
                    f"{rate:g}",
                    f"{sent / elapsed:.0f}",
                    f"{refused / elapsed:.0f}",
                    f"{accepted}/{policy_sent}" if flooder is not None else "-",
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
        [
            "flood",
            "offered /s",
            "sent /s",
            "refused /s",
            "policy's executed",
            "wake lateness p99 (ms)",
            "max (ms)",
            "overruns (total)",
        ],
        rows,
        [
            "Policy gone wrong: bad chunks by turns (NaN, unknown layout, 5000 steps, stamped 5 s ahead), read and"
            " refused. Another peer: well-formed chunks from another process, refused unread by their sender, beside"
            " the policy's every 0.2 s. Lateness over the last 10 s of the executor's loop (its /diagnostics)."
        ],
    )


if __name__ == "__main__":
    main()
