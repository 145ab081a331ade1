"""rotvla_eval: closed-loop success of a checkpoint on a simulated task, over seeded episodes.

    rotvla_eval models/sim-block_to_plate --task block_to_plate --episodes 50          (in-process)
    rotvla_eval models/sim-block_to_plate --task block_to_plate --episodes 20 --ros    (the ROS stack)

In-process (the default): the gymnasium cell, the policy and the executor's own controller in
one process per worker on sim time, deterministic for a seed. ``--ros``: the simulated bringup
(sim node, camera ingestion, policy node, executor) on sim time, each episode started by the
sim node's reset service. Either prints the success rate with its 95% Wilson interval and the
mean time to success, writes every episode to ``--output`` (JSON), and videos of
``--video-seeds`` (in-process) into ``--video-dir``. Seeds are ``--first-seed`` onwards
(the demonstrations of the tutorial use seeds from 1000: evaluation seeds are unseen scenes).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

from ..sim.tasks import TASKS
from .report import EpisodeResult, Summary

# s from an observation to its chunk reaching the controller in process: the live stack's
# inference time on a CPU (this module stays light: episodes, torch, load in the workers)
INFERENCE_LATENCY = 0.1


def _worker(args: tuple) -> list[EpisodeResult]:
    from .episodes import run_episodes

    checkpoint, task, seeds, period, latency, video_dir, video_seeds, time_limit = args
    return run_episodes(
        checkpoint,
        task,
        seeds,
        policy_period=period,
        latency=latency,
        video_dir=video_dir,
        video_seeds=video_seeds,
        time_limit=time_limit,
        on_result=_print_result,
    )


def _print_result(result: EpisodeResult) -> None:
    outcome = f"success at {result.time_to_success:.1f} s" if result.success else f"failed ({result.duration:.0f} s)"
    print(
        f"  seed {result.seed}: {outcome}; {result.chunks} chunks, {result.rejected_chunks} rejected "
        f"[{result.wall_seconds:.0f} s]",
        flush=True,
    )


def evaluate_in_process(
    checkpoint: str,
    task: str,
    seeds: list[int],
    *,
    policy_period: float,
    workers: int = 1,
    latency: float = INFERENCE_LATENCY,
    video_dir: Path | None = None,
    video_seeds: tuple[int, ...] = (),
    time_limit: float | None = None,
) -> list[EpisodeResult]:
    """The episodes of ``seeds``, over ``workers`` processes (each one torch thread)."""
    workers = max(1, min(workers, len(seeds)))
    shares = [seeds[k::workers] for k in range(workers)]
    jobs = [(checkpoint, task, share, policy_period, latency, video_dir, video_seeds, time_limit) for share in shares]
    if workers == 1:
        results = _worker(jobs[0])
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = [r for share in pool.map(_worker, jobs) for r in share]
    return sorted(results, key=lambda r: seeds.index(r.seed))


def stack_policy_period(config_dir: Path | None = None) -> float:
    """How often the simulated stack serves an observation: the policy's replan_period, at
    least one camera ingestion period (config/robot.yaml, config/sim.yaml)."""
    from rotvla_common.parameters import read_parameter_files

    from ..bringup import default_config_dir

    config_dir = Path(config_dir or default_config_dir())
    files = [config_dir / "robot.yaml", config_dir / "sim.yaml"]
    rate = float(read_parameter_files(files, "camera_ingestion").get("rate", 10.0))
    return max(float(read_parameter_files(files, "policy").get("replan_period", 0.0)), 1.0 / rate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory")
    parser.add_argument("--task", choices=sorted(TASKS), default="block_to_plate")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="in-process: episodes run in this many processes")
    parser.add_argument(
        "--policy-period",
        type=float,
        default=None,
        help="in-process: s between the observations served (default: the simulated stack's, "
        "config/sim.yaml: the policy's replan_period, at least one camera ingestion period)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=INFERENCE_LATENCY,
        help="in-process: s from an observation to its chunk reaching the controller",
    )
    parser.add_argument("--ros", action="store_true", help="through the simulated ROS stack instead")
    parser.add_argument(
        "--attach",
        action="store_true",
        help="--ros: use a running simulated stack (serving the checkpoint) instead of starting one",
    )
    parser.add_argument(
        "--time-limit", type=float, default=None, help="s of sim time per episode (default: the task's)"
    )
    parser.add_argument("--output", type=Path, help="JSON with every episode")
    parser.add_argument("--video-dir", type=Path, default=Path("videos"))
    parser.add_argument("--video-seeds", default="", help="comma-separated seeds to film (in-process)")
    args = parser.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    if args.policy_period is None:
        args.policy_period = stack_policy_period()
    if args.ros:
        from ..nodes.sim_episodes import evaluate_through_ros

        results = evaluate_through_ros(
            args.checkpoint, args.task, seeds, attach=args.attach, time_limit=args.time_limit, on_result=_print_result
        )
        settings = {"time_limit": args.time_limit}
    else:
        video_seeds = tuple(int(s) for s in args.video_seeds.split(",") if s.strip())
        results = evaluate_in_process(
            args.checkpoint,
            args.task,
            seeds,
            policy_period=args.policy_period,
            workers=args.workers,
            latency=args.latency,
            video_dir=args.video_dir,
            video_seeds=video_seeds,
            time_limit=args.time_limit,
        )
        settings = {"policy_period": args.policy_period, "latency": args.latency, "time_limit": args.time_limit}
    summary = Summary.of(args.task, Path(args.checkpoint).name, "ros" if args.ros else "in-process", results, settings)
    print(summary.line())
    if args.output:
        summary.write(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
