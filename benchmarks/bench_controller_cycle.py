"""The executor's control cycle (``DualArmController.step``) in CPU time, on the simulated cell in
process: each task's scripted expert drives both arms through a whole demonstration, the physics
stepped between cycles as in ``rotvla_record --in-process`` and ``rotvla_eval``. Per task, the
cycle's time with the arms' clearance computed exactly every cycle (36 capsule pairs through
coal) against the controller's own (exact only where it decides, ``ArmClearance.distance``'s
``beyond``), and whether the two give the same commands, cycle for cycle.

In process, the cycle is most of a recorded or evaluated episode's time; on the robot it is the
200 Hz loop's work.
Usage: python benchmarks/bench_controller_cycle.py [--seed 1000]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import percentiles, print_table  # noqa: E402

from arx_r5_driver.clearance import ArmClearance  # noqa: E402
from rotvla_ros.sim.env import SimCell, cell_parameters  # noqa: E402
from rotvla_ros.sim.scene import scene_of  # noqa: E402
from rotvla_ros.sim.tasks import TASKS  # noqa: E402


class ExactClearance(ArmClearance):
    """The clearance as before the bound: every capsule pair, every cycle."""

    def distance(self, q_first, q_second, beyond=None):
        return super().distance(q_first, q_second)


def episode(task: str, seed: int, exact: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(per-cycle CPU seconds (N,), commanded joints (N, A, 6), sim seconds) of one expert episode."""
    executor_values, _ = cell_parameters()
    cell = SimCell(task, seed, executor_values, scene_of(executor_values), 32, 24)
    controller = cell.controller
    if exact:
        controller.clearance = ExactClearance(*controller.clearance.arms)
    operator = cell.drive_with_expert()
    seconds, commands = [], []
    step = controller.step

    def timed(now, *args, **kwargs):
        started = time.process_time()
        cycle = step(now, *args, **kwargs)
        seconds.append(time.process_time() - started)
        commands.append(cycle.joints.copy())
        return cycle

    controller.step = timed
    try:
        while not operator.expert.done(cell.time) and cell.time < TASKS[task].time_limit:
            cell.advance(0.5)
    finally:
        cell.close()
    return np.array(seconds), np.array(commands), cell.time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1000, help="the demonstrations' first seed")
    args = parser.parse_args()
    rows = []
    for task in TASKS:
        exact, joints_exact, duration = episode(task, args.seed, exact=True)
        bounded, joints_bounded, _ = episode(task, args.seed, exact=False)
        same = joints_exact.shape == joints_bounded.shape and np.array_equal(joints_exact, joints_bounded)
        rows.append(
            [
                task,
                f"{duration:.1f}",
                len(exact),
                "{:.3f} / {:.3f}".format(*percentiles(exact)[::2]),
                "{:.3f} / {:.3f}".format(*percentiles(bounded)[::2]),
                f"{exact.sum() / bounded.sum():.2f}x",
                "yes" if same else "NO",
            ]
        )
        print(rows[-1], flush=True)
    print_table(
        "The control cycle's CPU time on the simulated cell (ms)",
        ["task", "sim s", "cycles", "exact clearance p50 / mean", "bounded p50 / mean", "speed-up", "same commands"],
        rows,
        [f"the scripted expert driving, seed {args.seed}; CPU time of DualArmController.step alone"],
    )


if __name__ == "__main__":
    main()
