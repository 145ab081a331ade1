"""Seeded episodes of the simulated stack, driven over ROS: the sim node's ``/sim/reset``
starts each one (a new scene, sim time from 0), ``/sim/task_success`` and ``/clock`` say
when it is done. ``rotvla_record`` records the scripted expert's episodes with the episode
recorder; ``rotvla_eval --ros`` measures a checkpoint's (``evaluate_through_ros``).

The stack is either started here (``start_stack``: the composed runner ``rotvla_run`` as a
child process, as ``make run`` starts it) or already running (``ros2 launch rotvla_ros
bringup.launch.py sim:=true ...``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import rclpy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from rotvla_common import topics
from rotvla_msgs.msg import ActionChunk, ExecutorStatus
from rotvla_msgs.srv import ResetSimulation, StartEpisode, StopEpisode

from ..eval.report import EpisodeResult
from .common import RELIABLE_QOS, GraphClient, ServiceUnavailable, to_seconds


class SimEpisodes(GraphClient):
    """A client node of the simulated stack (spun here, in the caller's thread)."""

    def __init__(self, name: str = "sim_episodes"):
        super().__init__(name)
        self.sim_time = 0.0
        self.success = False
        self._epoch = 0  # counts /clock jumps back: a reset has reached this node
        self.node.create_subscription(Clock, topics.CLOCK, self._on_clock, RELIABLE_QOS)
        self.node.create_subscription(Bool, topics.SIM_TASK_SUCCESS, self._on_success, RELIABLE_QOS)
        self.chunks = 0
        self.executor_status: ExecutorStatus | None = None
        self.node.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, RELIABLE_QOS)
        self.node.create_subscription(
            ExecutorStatus, topics.EXECUTOR_STATUS, lambda msg: setattr(self, "executor_status", msg), RELIABLE_QOS
        )

    def _on_clock(self, msg: Clock) -> None:
        now = to_seconds(msg.clock)
        if now < self.sim_time:
            self._epoch += 1
        self.sim_time = now

    def _on_chunk(self, msg: ActionChunk) -> None:
        self.chunks += 1

    def _executor_counts(self) -> tuple[int, int]:
        status = self.executor_status
        return (status.chunks_rejected, status.limit_events) if status is not None else (0, 0)

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the simulation answers and its clock runs."""
        if not self.client(ResetSimulation, topics.SIM_RESET).wait_for_service(timeout_sec=timeout):
            raise ServiceUnavailable("no /sim/reset service: is the simulated stack running?")
        if not self.spin_for(timeout, lambda: self.sim_time > 0.5):
            raise RuntimeError("/clock does not advance")

    def reset(self, seed: int, settle: float = 0.5) -> ResetSimulation.Response:
        """A new episode from ``seed``; returns once this node sees the new clock run for
        ``settle`` s (the other nodes have had the jump and the new world's first frames)."""
        epoch = self._epoch
        response = self.require(ResetSimulation, topics.SIM_RESET, ResetSimulation.Request(seed=seed), 60.0)
        if not response.success:
            raise RuntimeError(response.message)
        if not self.spin_for(60.0, lambda: self._epoch > epoch and self.sim_time >= settle):
            raise RuntimeError("the simulation did not restart its clock after the reset")
        self.success = False
        return response

    def run_until_success(
        self, task: str, seed: int, time_limit: float, after_success: float = 0.0, wall_limit: float | None = None
    ) -> EpisodeResult:
        """From a reset: until the task succeeds (and ``after_success`` more sim seconds) or
        ``time_limit`` sim seconds have passed."""
        started, start_time = time.monotonic(), self.sim_time
        chunks, (rejected, limit_events) = self.chunks, self._executor_counts()
        wall_limit = wall_limit or 20 * time_limit  # a sim that stops advancing must not hang the run
        self.spin_for(wall_limit, lambda: self.success or self.sim_time >= time_limit)
        success, at = self.success, self.sim_time
        if success and after_success > 0:
            self.spin_for(wall_limit, lambda: self.sim_time >= at + after_success)
        rejected_now, limit_events_now = self._executor_counts()
        return EpisodeResult(
            task,
            seed,
            success,
            at if success else None,
            self.sim_time - start_time,
            wall_seconds=time.monotonic() - started,
            chunks=self.chunks - chunks,
            rejected_chunks=rejected_now - rejected,
            limit_events=limit_events_now - limit_events,
        )


def start_stack(arguments: list[str], log: Path) -> subprocess.Popen:
    """The simulated stack (``rotvla_run`` with ``arguments``) as a child process, its output
    in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    output = open(log, "w")  # noqa: SIM115 - the child writes to it for as long as it runs
    return subprocess.Popen(
        [sys.executable, "-m", "rotvla_ros.nodes.runner", *arguments],
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_stack(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def record_demonstrations(
    task: str,
    seeds: list[int],
    output: Path,
    *,
    keep_failures: bool = False,
    attach: bool = False,
    noise: float = 0.0,
    log_dir: Path = Path("log/record"),
) -> list[EpisodeResult]:
    """The scripted expert's episodes of ``seeds``, each recorded by the episode recorder into
    ``output`` (a rosbag2 directory per episode with its episode.json). ``noise``: perturbed
    demonstrations (the sim's ``expert_noise``, rad; convert with ``--action-label intended``)."""
    from ..sim.experts import operator_name
    from ..sim.tasks import TASKS

    arguments = [
        "--task",
        task,
        "--expert",
        "--no-policy",
        "--record",
        "--ros-args",
        "-p",
        f"output_dir:={output.resolve()}",
        "-p",
        f"expert_noise:={float(noise)}",
    ]
    operator = operator_name(noise)
    outcomes = []
    with stack_session(None if attach else arguments, log_dir / f"{task}.log", "demo_operator") as client:
        for seed in seeds:
            reply = client.reset(seed)
            request = StartEpisode.Request(task=task, instruction=reply.instruction, operator_name=operator)
            started = client.require(StartEpisode, topics.RECORDER_START, request, 60.0)
            if not started.success:
                raise RuntimeError(f"the recorder did not start: {started.message}")
            outcome = client.run_until_success(task, seed, TASKS[task].time_limit, after_success=0.5)
            if outcome.success or keep_failures:
                request = StopEpisode.Request(task_success=outcome.success, notes=f"seed {seed}")
                stopped = client.require(StopEpisode, topics.RECORDER_STOP, request, 60.0)
                where = stopped.path
            else:
                client.require(Trigger, topics.RECORDER_DISCARD, Trigger.Request(), 60.0)
                where = "discarded"
            outcomes.append(outcome)
            print(
                f"seed {seed}: {'success' if outcome.success else 'failed'} in {outcome.duration:.1f} s of sim time "
                f"({outcome.wall_seconds:.0f} s) -> {where}",
                flush=True,
            )
    return outcomes


@contextmanager
def stack_session(arguments: list[str] | None, log: Path, name: str, client_type=None):
    """A SimEpisodes client of the simulated stack, ready: the stack started with ``arguments``
    (None: attach to one already running), rclpy initialised if it was not; all undone after.
    ``client_type``: a callable making the client instead (a SimEpisodes with more to do)."""
    stack = start_stack(arguments, log) if arguments is not None else None
    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    client = client_type() if client_type is not None else SimEpisodes(name)
    try:
        client.wait_ready()
        yield client
    finally:
        client.close()
        if owns_context:
            rclpy.try_shutdown()
        if stack is not None:
            stop_stack(stack)


def evaluate_through_ros(
    checkpoint: str,
    task: str,
    seeds: list[int],
    *,
    attach: bool = False,
    time_limit: float | None = None,
    shift: frozenset[str] = frozenset(),
    log_dir: Path = Path("log/eval"),
    on_result=None,
) -> list[EpisodeResult]:
    """The policy node serving ``checkpoint`` drives the simulated stack through the episodes
    of ``seeds`` (EpisodeResult each, as the in-process evaluation reports them); ``shift``:
    the sim node's domain shift (an attached stack must have been started with it)."""
    from ..sim.shift import describe
    from ..sim.tasks import TASKS

    arguments = ["--task", task, "--checkpoint", str(Path(checkpoint).resolve()), "--shift", describe(shift)]
    results = []
    with stack_session(None if attach else arguments, log_dir / f"{task}.log", "evaluation") as client:
        for seed in seeds:
            client.reset(seed)
            results.append(client.run_until_success(task, seed, time_limit or TASKS[task].time_limit))
            if on_result is not None:
                on_result(results[-1])
    return results


def main(argv=None) -> int:
    """rotvla_record: record the simulated scripted expert's demonstrations of a task."""
    import argparse

    from rotvla_common.arguments import integer, number

    from ..eval.seeds import DEMONSTRATIONS
    from ..sim.tasks import TASKS

    parser = argparse.ArgumentParser(
        description="Record the scripted expert's demonstrations of a simulated task, one rosbag2 episode per seed "
        "(the episode recorder of the stack), ready for rotvla_convert."
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="block_to_plate")
    parser.add_argument("--episodes", type=integer(1, len(DEMONSTRATIONS)), default=50)
    parser.add_argument(
        "--first-seed",
        type=integer(0),
        default=DEMONSTRATIONS.start,
        help=f"demonstrations are recorded on seeds {DEMONSTRATIONS.start}-{DEMONSTRATIONS.stop - 1} only: "
        "the validation and test scenes stay unseen (rotvla_ros.eval.seeds)",
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="directory of the episodes (--in-process: the dataset's)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="record in the simulated cell without ROS, straight into a LeRobot dataset: what rotvla_convert "
        "makes of the stack's recording of the same seeds, in 3-8 s an episode (rotvla_ros.sim.demonstrations)",
    )
    parser.add_argument("--overwrite", action="store_true", help="--in-process: replace an existing dataset")
    parser.add_argument("--keep-failures", action="store_true", help="keep episodes the expert failed (flagged)")
    parser.add_argument(
        "--attach",
        action="store_true",
        help="use a running simulated stack (expert:=true, record:=true) instead of starting one",
    )
    parser.add_argument(
        "--noise",
        type=number(0.0, 0.2, low_inclusive=True),
        default=0.0,
        help="perturbed demonstrations (DART): std (rad) of a slowly varying offset on the executed joints; the "
        "expert's own targets are recorded as what it meant (rotvla_convert --action-label intended)",
    )
    args = parser.parse_args(argv)
    if args.noise and args.attach:
        parser.error("--noise sets the simulation's expert_noise at start: start the stack here (no --attach)")
    if args.in_process and args.attach:
        parser.error("--attach records a running stack; --in-process runs no stack")
    if args.overwrite and not args.in_process:
        parser.error("--overwrite replaces a dataset: only --in-process writes one")
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    if seeds[0] not in DEMONSTRATIONS or seeds[-1] not in DEMONSTRATIONS:
        parser.error(
            f"seeds {seeds[0]}-{seeds[-1]} leave the demonstration range "
            f"{DEMONSTRATIONS.start}-{DEMONSTRATIONS.stop - 1}: evaluation scenes must stay unseen"
        )
    if args.in_process:
        from ..data.convert import ConversionError
        from ..sim.demonstrations import record_dataset

        try:
            info = record_dataset(
                args.task,
                seeds,
                args.output,
                noise=args.noise,
                keep_failures=args.keep_failures,
                overwrite=args.overwrite,
                report=lambda line: print(line, flush=True),
            )
        except ConversionError as error:
            print(f"rotvla_record: {error}", file=sys.stderr)
            return 1
        kept = f"{info['total_episodes']} episodes ({info['total_frames']} frames)"
        print(f"{kept} of {len(seeds)} seeds in {args.output}")
        return 0
    outcomes = record_demonstrations(
        args.task, seeds, args.output, keep_failures=args.keep_failures, attach=args.attach, noise=args.noise
    )
    print(f"{sum(o.success for o in outcomes)}/{len(outcomes)} successful demonstrations in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
