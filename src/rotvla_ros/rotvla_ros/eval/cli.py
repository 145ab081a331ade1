"""rotvla_eval: closed-loop success of a checkpoint on a simulated task, over seeded episodes.

    rotvla_eval models/sim-block_to_plate --task block_to_plate --episodes 100                 (validation)
    rotvla_eval models/sim-block_to_plate --task block_to_plate --episodes 100 --split test    (report)
    rotvla_eval models/sim-block_to_plate --task block_to_plate --episodes 20 --ros            (the ROS stack)
    rotvla_eval --compare results/a.json results/b.json                                        (a p-value)

In-process (the default): the gymnasium cell, the policy and the executor's own controller in
one process per worker on sim time, deterministic for a seed. ``--ros``: the simulated bringup
(sim node, camera ingestion, policy node, executor) on sim time, each episode started by the
sim node's reset service. Either prints the success rate with its 95% Wilson interval and the
mean time to success, writes every episode to ``--output`` (JSON), and videos of
``--video-seeds`` (in-process) into ``--video-dir``.

Seeds come from a split (``rotvla_ros.eval.seeds``): ``validation`` (the default: choose
recipes, steps and checkpoints here) or ``test`` (report here, never choose); ``--first-seed``
moves within it. Demonstrations are recorded on seeds of neither. ``--compare`` takes two
``--output`` files of the same task and seeds: both rates with their intervals, the
difference, and its two-sided p-values (McNemar's exact test on the paired seeds, Fisher's
exact test on the counts).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

from ..policy.checkpoint import CheckpointError, read_instructions
from ..sim.tasks import TASKS
from .episodes import INFERENCE_LATENCY
from .report import EpisodeResult, Summary


def _worker(args: tuple) -> list[EpisodeResult]:
    from .episodes import run_episodes

    checkpoint, task, seeds, period, latency, video_dir, video_seeds, time_limit, shift = args
    return run_episodes(
        checkpoint,
        task,
        seeds,
        policy_period=period,
        latency=latency,
        video_dir=video_dir,
        video_seeds=video_seeds,
        time_limit=time_limit,
        shift=shift,
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
    shift: frozenset[str] = frozenset(),
) -> list[EpisodeResult]:
    """The episodes of ``seeds``, over ``workers`` processes (each one torch thread)."""
    workers = max(1, min(workers, len(seeds)))
    shares = [seeds[k::workers] for k in range(workers)]
    jobs = [
        (checkpoint, task, share, policy_period, latency, video_dir, video_seeds, time_limit, shift) for share in shares
    ]
    if workers == 1:
        results = _worker(jobs[0])
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = [r for share in pool.map(_worker, jobs) for r in share]
    return sorted(results, key=lambda r: seeds.index(r.seed))


def stack_policy_period(config_dir: Path | None = None) -> float:
    """How often the simulated stack serves an observation: the policy's replan_period, at
    least one camera ingestion period (config/robot.yaml, config/sim.yaml)."""
    from rotvla_common.contract import STEP_PERIOD
    from rotvla_common.parameters import read_parameter_files

    from ..bringup import default_config_dir

    config_dir = Path(config_dir or default_config_dir())
    files = [config_dir / "robot.yaml", config_dir / "sim.yaml"]
    step_period = float(read_parameter_files(files, "camera_ingestion").get("step_period", STEP_PERIOD))
    return max(float(read_parameter_files(files, "policy").get("replan_period", 0.0)), step_period)


def parse(argv=None) -> argparse.Namespace:
    from rotvla_common.arguments import integer, number

    from ..sim.shift import SHIFT_KINDS, shift_argument
    from .seeds import SPLITS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="checkpoint directory")
    parser.add_argument("--task", choices=sorted(TASKS), default="block_to_plate")
    parser.add_argument("--split", choices=sorted(SPLITS), default="validation", help="the seeds' range (see above)")
    parser.add_argument("--episodes", type=integer(1, 10_000), default=50)
    parser.add_argument("--first-seed", type=integer(0), default=None, help="default: the split's first seed")
    parser.add_argument(
        "--workers", type=integer(1, 64), default=2, help="in-process: episodes run in this many processes"
    )
    parser.add_argument(
        "--policy-period",
        type=number(0.0, 10.0),
        default=None,
        help="in-process: s between the observations served (default: the simulated stack's, "
        "config/sim.yaml: the policy's replan_period, at least one camera ingestion period)",
    )
    parser.add_argument(
        "--latency",
        type=number(0.0, 5.0, low_inclusive=True),
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
        "--time-limit",
        type=number(0.0, 3600.0),
        default=None,
        help="s of sim time per episode (default: the task's)",
    )
    parser.add_argument(
        "--shift",
        type=shift_argument,
        default="none",
        help="domain shift of every scene, drawn from its seed: none, all or a comma-separated list of "
        f"{', '.join(SHIFT_KINDS)} (no demonstration is recorded with one)",
    )
    parser.add_argument("--output", type=Path, help="JSON with every episode (its directory must exist)")
    parser.add_argument("--video-dir", type=Path, default=Path("videos"))
    parser.add_argument("--video-seeds", default="", help="comma-separated seeds to film (in-process)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two results")
    parser.add_argument(
        "--unseen-task",
        action="store_true",
        help="evaluate on a task whose instruction the checkpoint was not trained on (else refused)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return args
    if not args.checkpoint:
        parser.error("a checkpoint directory is needed (or --compare A.json B.json)")
    if not Path(args.checkpoint).is_dir():
        parser.error(f"checkpoint: no directory {args.checkpoint}")
    if args.attach and not args.ros:
        parser.error("--attach uses a running stack: it needs --ros")
    try:
        trained_on = read_instructions(Path(args.checkpoint))
    except CheckpointError as error:
        parser.error(f"checkpoint: {error}")
    instruction = TASKS[args.task].instruction
    if trained_on and instruction not in trained_on and not args.unseen_task:
        parser.error(
            f"--task {args.task}: the checkpoint was trained on {list(trained_on)}, not on {instruction!r} "
            "(--unseen-task to evaluate it anyway)"
        )
    if args.output is not None and not args.output.parent.is_dir():
        parser.error(f"--output: no directory {args.output.parent}")
    try:
        args.video_seeds = tuple(int(s) for s in args.video_seeds.split(",") if s.strip())
    except ValueError:
        parser.error(f"--video-seeds: {args.video_seeds!r} is not a comma-separated list of seeds")
    if args.latency >= (args.policy_period or stack_policy_period()) * 10:
        parser.error(f"--latency {args.latency} s: chunks would arrive long after their observation")
    return args


def compare(path_a: Path, path_b: Path) -> str:
    """Two results of the same task and seeds: both rates, the difference and its p-values."""
    from scipy.stats import binomtest, fisher_exact

    a, b = (Summary.read(path) for path in (path_a, path_b))
    if a.task != b.task:
        raise ValueError(f"{path_a} is {a.task}, {path_b} is {b.task}: not comparable")
    seeds_a, seeds_b = ({r.seed: r.success for r in s.results} for s in (a, b))
    if set(seeds_a) != set(seeds_b):
        raise ValueError(f"{path_a} and {path_b} ran other seeds: not a paired comparison")
    only_a = sum(seeds_a[k] and not seeds_b[k] for k in seeds_a)
    only_b = sum(seeds_b[k] and not seeds_a[k] for k in seeds_a)
    mcnemar = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    table = [[a.successes, a.episodes - a.successes], [b.successes, b.episodes - b.successes]]
    fisher = fisher_exact(table).pvalue
    verdict = "a difference" if mcnemar < 0.05 else "no difference at the 5% level"
    return "\n".join(
        [
            f"A {a.line()}",
            f"B {b.line()}",
            f"B - A = {100 * (b.success_rate - a.success_rate):+.0f} points over {a.episodes} paired seeds "
            f"({only_a} succeed only with A, {only_b} only with B): McNemar exact p = {mcnemar:.3g}, "
            f"Fisher exact p = {fisher:.3g}: {verdict}",
        ]
    )


def main(argv=None) -> int:
    from ..sim.shift import parse_shift
    from .seeds import split_seeds

    args = parse(argv)
    if args.compare:
        try:
            print(compare(*args.compare))
        except (ValueError, OSError, KeyError, TypeError) as error:
            print(f"rotvla_eval: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        seeds = split_seeds(args.split, args.episodes, args.first_seed)
    except ValueError as error:
        print(f"rotvla_eval: {error}", file=sys.stderr)
        return 2
    if args.policy_period is None:
        args.policy_period = stack_policy_period()
    shift = parse_shift(args.shift)
    settings = {"split": args.split, "time_limit": args.time_limit, "shift": args.shift}
    if args.ros:
        from ..nodes.sim_episodes import evaluate_through_ros

        results = evaluate_through_ros(
            args.checkpoint,
            args.task,
            seeds,
            attach=args.attach,
            time_limit=args.time_limit,
            shift=shift,
            on_result=_print_result,
        )
    else:
        results = evaluate_in_process(
            args.checkpoint,
            args.task,
            seeds,
            policy_period=args.policy_period,
            workers=args.workers,
            latency=args.latency,
            video_dir=args.video_dir,
            video_seeds=args.video_seeds,
            time_limit=args.time_limit,
            shift=shift,
        )
        settings.update(policy_period=args.policy_period, latency=args.latency)
    summary = Summary.of(args.task, Path(args.checkpoint).name, "ros" if args.ros else "in-process", results, settings)
    print(summary.line())
    if args.output:
        summary.write(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
