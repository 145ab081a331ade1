"""The scripted expert's demonstrations recorded in process: the simulated cell stepped on sim
time (``env.SimCell``: the executor's own controller, the same physics and cameras as the
stack's), one episode per seed, written straight into a LeRobot v3 dataset by the converter's
writer. ROS-free.

What a recording through the stack (``rotvla_record``) and ``rotvla_convert`` make of the same
seed, without the middleware: frames at the dataset's fps on sim time, each camera's image and
the measured state of the same instant, idle frames at the start left out, and the labels of
``rotvla_convert`` (``demonstration_actions``). Where the stack's recording is paced by the
machine (28-41 s an episode on two cores, and unusable when the machine is busy: gaps in a
stream), this one takes 3-8 s and cannot starve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rotvla_common.action_space import CAMERA_NAMES

from ..data.convert import ConversionConfig, Episode, demonstration_actions, first_motion, intended_poses, write_dataset
from .env import CellEnv
from .experts import EXPERT_DELAY, operator_name
from .tasks import TASKS

AFTER_SUCCESS = 0.5  # sim s recorded after the task is done (as rotvla_record does)


def record_episode(env: CellEnv, seed: int, noise: float, config: ConversionConfig) -> Episode:
    """The expert's episode of ``seed`` (until the task is done and ``AFTER_SUCCESS`` more, or
    the task's time limit); ``meta["success"]`` says whether it was done."""
    env.reset(seed=seed)
    cell = env.cell
    operator = cell.drive_with_expert(start_delay=EXPERT_DELAY, noise=noise, seed=seed)
    period = 1.0 / config.fps
    frames: dict[str, list[np.ndarray]] = {camera: [] for camera in config.cameras}
    state, intended, done_at = [], [], None
    while True:
        observation = cell.observation()
        for camera in config.cameras:
            frames[camera].append(observation["pixels"][camera])
        state.append(observation["agent_pos"])
        # The targets the expert meant at this frame's time: before its first cycle, where the arms are.
        meant = operator.intended or {arm: cell.world.read(arm) for arm in cell.world.arm_names}
        intended.append([np.r_[meant[arm][0], meant[arm][1]] for arm in config.arms])
        if done_at is None and cell.success():
            done_at = cell.time
        if (done_at is not None and cell.time >= done_at + AFTER_SUCCESS - 1e-9) or cell.time >= env.time_limit:
            break
        cell.advance(period)
    state_array = np.stack(state)  # (T, 20)
    first = first_motion(state_array, config.idle_motion, len(config.arms))
    state_array = state_array[first:]
    times = np.arange(len(state_array), dtype=np.float32) * period  # (T,)
    # The label of frame t is what was meant at frame t + 1 (the last frame: its own).
    following = np.r_[np.arange(first + 1, first + len(state_array)), first + len(state_array) - 1]
    intended_labels = intended_poses(np.array(intended)[following]) if config.action_label == "intended" else None
    return Episode(
        name=f"{env.task}_seed{seed}",
        task=env.task_description,
        timestamps=times,
        state=state_array,
        action=demonstration_actions(state_array, intended_labels, config),
        frames={camera: np.stack(f[first:]) for camera, f in frames.items()},  # (T, H, W, 3)
        meta={
            "task": env.task,
            "instruction": env.task_description,
            "success": done_at is not None,
            "operator": operator_name(noise),
            "notes": f"seed {seed}",
        },
    )


def demonstrations(
    task: str, seeds: list[int], noise: float, keep_failures: bool, config: ConversionConfig, report=print
) -> Iterator[Episode]:
    """The expert's episodes of ``seeds``, those it failed left out unless ``keep_failures``."""
    env = CellEnv(task)
    try:
        for seed in seeds:
            episode = record_episode(env, seed, noise, config)
            success = episode.meta["success"]
            kept = success or keep_failures
            report(
                f"seed {seed}: {'success' if success else 'failed'} "
                f"({len(episode.timestamps)} frames){'' if kept else ': left out'}"
            )
            if kept:
                yield episode
    finally:
        env.close()


def record_dataset(
    task: str,
    seeds: list[int],
    output: Path,
    *,
    noise: float = 0.0,
    keep_failures: bool = False,
    overwrite: bool = False,
    report=print,
) -> dict:
    """The expert's demonstrations of ``seeds`` as one dataset at ``output`` (labels: measured,
    or intended with ``noise``); its info.json."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
    config = ConversionConfig(cameras=CAMERA_NAMES, action_label="intended" if noise else "measured")
    return write_dataset(demonstrations(task, seeds, noise, keep_failures, config, report), output, config, overwrite)
