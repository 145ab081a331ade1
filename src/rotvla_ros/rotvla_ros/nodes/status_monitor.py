"""A live status of the running stack: the clock (sim time under ``use_sim_time``), chunks
per second, policy latency, capture-to-chunk latency, the checkpoint serving, observations
dropped, and the executor's mode, executed steps, rejected chunks and safety events.

One whole line per ``period`` (what ``ros2 launch`` and logs show: launch prints complete
lines only), or, with ``overwrite_line`` (``rotvla_run`` on an interactive terminal), one line
rewritten in place."""

from __future__ import annotations

import collections
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Bool

from rotvla_common import topics
from rotvla_msgs.msg import ActionChunk, ExecutorStatus

from .common import RELIABLE_QOS, declare, now_seconds, run_node, to_seconds


class StatusMonitor(Node):
    def __init__(self, **kwargs):
        super().__init__("status_monitor", **kwargs)
        period = declare(self, "period", 1.0, "Seconds between status lines.")
        self.overwrite = declare(
            self,
            "overwrite_line",
            False,
            "Rewrite one terminal line in place instead of "
            "printing a line per period (interactive terminals only; never under launch).",
        )
        self.chunks: collections.deque = collections.deque(maxlen=200)  # (wall time, policy s, capture->chunk s, id)
        self.dropped = 0
        self.executor_status: ExecutorStatus | None = None
        self.create_subscription(
            ExecutorStatus, topics.EXECUTOR_STATUS, lambda msg: setattr(self, "executor_status", msg), RELIABLE_QOS
        )
        self.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, RELIABLE_QOS)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, RELIABLE_QOS)
        self.task_done_at: float | None = None  # sim time the simulated task first succeeded
        self.create_subscription(Bool, topics.SIM_TASK_SUCCESS, self._on_task_success, RELIABLE_QOS)
        self.create_timer(period, self._print)

    def _on_chunk(self, chunk: ActionChunk) -> None:
        self.chunks.append(
            (
                time.monotonic(),
                chunk.inference_time,
                now_seconds(self) - to_seconds(chunk.header.stamp),
                chunk.checkpoint_id,
            )
        )

    def _on_task_success(self, msg: Bool) -> None:
        now = now_seconds(self)
        if self.task_done_at is not None and now < self.task_done_at:
            self.task_done_at = None  # the simulation was reset
        if msg.data and self.task_done_at is None:
            self.task_done_at = now

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        own_namespace = self.get_namespace().rstrip("/")
        for status in msg.status:
            if status.hardware_id.rpartition("/")[0] != own_namespace:
                continue  # another cell's node: /diagnostics is one topic for the machine
            if status.name == "rotvla/camera_ingestion":
                self.dropped = sum(int(kv.value) for kv in status.values if kv.key.startswith("dropped/"))

    def _print(self) -> None:
        now = time.monotonic()
        recent = [c for c in self.chunks if now - c[0] <= 5.0]
        if not recent:
            line = "waiting for action chunks ..."
        else:
            rate = len(recent) / 5.0
            policy_ms = 1e3 * sorted(c[1] for c in recent)[len(recent) // 2]
            latency_ms = 1e3 * sorted(c[2] for c in recent)[len(recent) // 2]
            line = (
                f"t={now_seconds(self):.1f}  chunks/s={rate:.1f}  policy={policy_ms:.1f} ms  "
                f"capture->chunk={latency_ms:.1f} ms  checkpoint={recent[-1][3]}  dropped obs={self.dropped}"
            )
        if self.executor_status is not None:
            modes = {v: k[5:].lower() for k, v in vars(ExecutorStatus).items() if k.startswith("MODE_")}
            e = self.executor_status
            line += (
                f"  | arms{' (DRY RUN: nothing sent)' if e.dry_run else ''}: {modes.get(e.mode, e.mode)} "
                f"({e.control_source} drives) steps={e.executed_steps} "
                f"rejected={e.chunks_rejected} safety events={e.limit_events}"
            )
        if self.task_done_at is not None:
            line += f"  | TASK DONE at t={self.task_done_at:.1f} s"
        sys.stdout.write("\r\033[K" + line if self.overwrite and sys.stdout.isatty() else line + "\n")
        sys.stdout.flush()


def main(args=None):
    run_node(StatusMonitor, args, num_threads=2)


if __name__ == "__main__":
    main()
