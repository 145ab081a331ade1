"""Closed-loop success of the simulation checkpoints, seeded episodes with 95% Wilson
intervals: in-process (the cell, the policy and the executor's controller on sim time,
deterministic) and, with --ros, through the simulated ROS stack on this machine.

    python benchmarks/bench_closed_loop.py                                    # the shipped checkpoints
    python benchmarks/bench_closed_loop.py --checkpoint runs/b2p/ft/last --task block_to_plate --episodes 50 --ros 20
    python benchmarks/bench_closed_loop.py --checkpoint A --checkpoint B --task block_to_plate   # same seeds, A vs B

Targets (issue: a policy that does the tasks): block_to_plate >= 80% over 50 episodes
in-process, and within 10 points of that through the ROS stack; the other tasks reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

SHIPPED = {"block_to_plate": "models/sim-block_to_plate"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], help="checkpoint directory (repeatable)")
    parser.add_argument("--task", default=None, help="the task of the --checkpoint(s)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ros", type=int, default=0, metavar="N", help="also N episodes through the ROS stack")
    args = parser.parse_args()

    from rotvla_ros.eval.cli import evaluate_in_process, stack_policy_period
    from rotvla_ros.eval.report import Summary

    runs = [(args.task, c) for c in args.checkpoint] if args.checkpoint else list(SHIPPED.items())
    root = HERE.parent
    rows = []
    period = stack_policy_period()
    for task, checkpoint in runs:
        path = Path(checkpoint) if Path(checkpoint).is_absolute() else root / checkpoint
        if not path.is_dir():
            rows.append([task, checkpoint, "in-process", "missing", "", "", ""])
            continue
        seeds = list(range(args.first_seed, args.first_seed + args.episodes))
        results = evaluate_in_process(str(path), task, seeds, policy_period=period, workers=args.workers)
        summaries = [Summary.of(task, path.name, "in-process", results)]
        if args.ros:
            from rotvla_ros.nodes.sim_episodes import evaluate_through_ros

            summaries.append(
                Summary.of(task, path.name, "ros", evaluate_through_ros(str(path), task, seeds[: args.ros]))
            )
        for s in summaries:
            mean = f"{s.mean_time_to_success:.1f}" if s.mean_time_to_success is not None else "-"
            rows.append(
                [
                    task,
                    path.name,
                    s.mode,
                    f"{s.successes}/{s.episodes}",
                    f"{100 * s.success_rate:.0f}%",
                    f"{100 * s.ci95[0]:.0f}-{100 * s.ci95[1]:.0f}%",
                    mean,
                ]
            )
    print_table(
        f"Closed-loop success in simulation (seeds from {args.first_seed})",
        ["task", "checkpoint", "mode", "successes", "rate", "95% CI (Wilson)", "mean s to success"],
        rows,
        [
            f"in-process: policy every {period:g} s of sim time, 0.1 s inference latency simulated; "
            "ros: the simulated bringup on sim time (rotvla_eval --ros)."
        ],
    )


if __name__ == "__main__":
    main()
