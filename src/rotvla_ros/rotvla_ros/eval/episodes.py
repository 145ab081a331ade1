"""Evaluation episodes in one process: the simulated cell (``sim.env``), the policy and the
executor's own controller (chunk scheduler, IK, safety filter), all on sim time: the result
of a seed is the same on every run and machine speed does not matter.

Each policy period an observation is taken (the three rendered views, the robot state, the
instruction), the policy makes a chunk stamped with the observation's time, the world moves
on for ``latency`` seconds (the inference time it would take live) and the chunk reaches the
controller, which drops its past steps as the executor does. The episode ends at success or
at the task's time limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from arx_r5_driver.chunks import ChunkRejected

from ..policy import NonFiniteOutputError, Policy, load_policy
from ..sim.env import CellEnv
from ..sim.tasks import TASKS
from .report import EpisodeResult, VideoRecorder

# s from an observation to its chunk reaching the controller in process: the live stack's
# inference time on a CPU
INFERENCE_LATENCY = 0.1


def run_episode(
    env: CellEnv,
    policy: Policy,
    seed: int,
    *,
    policy_period: float,
    latency: float = INFERENCE_LATENCY,
    instruction: str | None = None,
    video: Path | None = None,
) -> EpisodeResult:
    started = time.perf_counter()
    observation, _ = env.reset(seed=seed)
    cell = env.cell
    instruction = instruction or env.task_description
    recorder = VideoRecorder(video, 1.0 / policy_period) if video else None
    result = EpisodeResult(env.task, seed, False, None, 0.0)
    try:
        index = 0
        while cell.time < env.time_limit - 1e-9:
            stamp = cell.time
            observation = cell.observation()
            if recorder is not None:
                recorder.add(cell.render())
            try:
                output = policy.predict(
                    {"images": observation["pixels"], "state": observation["agent_pos"], "instruction": instruction},
                    seed=seed * 100_003 + index,
                )
            except NonFiniteOutputError:
                output = None  # nothing reaches the arms: the controller keeps its trajectory
            index += 1
            cell.advance(latency)
            if output is not None:
                result.chunks += 1
                try:
                    cell.submit_chunk(
                        output.actions, stamp, output.dt, sequence=index, checkpoint_id=policy.checkpoint_id
                    )
                except ChunkRejected:
                    result.rejected_chunks += 1
            cell.advance(max(policy_period - latency, 0.0))
            if cell.success():
                result.success, result.time_to_success = True, cell.time
                break
        result.duration = cell.time
        result.limit_events = cell.controller.counters.limit_events
    finally:
        if recorder is not None:
            recorder.add(cell.render())
            recorder.close()
    result.wall_seconds = time.perf_counter() - started
    return result


def run_episodes(
    checkpoint: str,
    task: str,
    seeds: list[int],
    *,
    policy_period: float,
    latency: float = INFERENCE_LATENCY,
    video_dir: Path | None = None,
    video_seeds: tuple[int, ...] = (),
    time_limit: float | None = None,
    shift: frozenset[str] = frozenset(),
    on_result=None,
) -> list[EpisodeResult]:
    """Every seed, in order, with one policy and one environment (one torch thread);
    ``shift``: the scenes' domain shift (``sim.shift``)."""
    import torch

    torch.set_num_threads(1)
    policy = load_policy(checkpoint, device="cpu")
    env = CellEnv(task, time_limit=time_limit, shift=shift)
    results = []
    try:
        for seed in seeds:
            video = video_dir / f"{task}-seed{seed}.mp4" if video_dir is not None and seed in video_seeds else None
            result = run_episode(env, policy, seed, policy_period=policy_period, latency=latency, video=video)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        env.close()
    return results


def replay_episode(
    dataset, episode: int, task: str, seed: int, horizon: int = 16, replan_steps: int = 5, time_shift_steps: int = 0
) -> dict:
    """The contract, end to end: a recorded episode's actions sent as a perfect policy would
    send them (every ``replan_steps`` frames, the next ``horizon`` actions, stamped with the
    frame's time) through the controller in the cell of the same seed. With the contract
    kept (the dataset's step period, ``action[k] = state[k + 1]``, step ``i`` due at
    ``stamp + (i + 1) dt``) the end effector retraces the recorded path. Returns the largest
    and mean distance (m) between the recorded and the replayed positions of the arms the
    task uses, at every frame, and whether the task succeeded. ``time_shift_steps``: every
    target that many steps early (> 0) or late (< 0), a broken alignment, to see what it costs."""
    row = dataset.episodes[episode]
    start, end = int(row["dataset_from_index"]), int(row["dataset_to_index"])
    states, actions, dt = dataset.state[start:end], dataset.action[start:end], 1.0 / dataset.fps
    env = CellEnv(task)
    try:
        env.reset(seed=seed)
        cell = env.cell
        replayed = []
        for k in range(len(states)):
            if k:
                cell.advance(dt)
            replayed.append(cell.state())
            if k % replan_steps == 0:
                first = min(max(k + time_shift_steps, 0), len(actions) - 1)
                # Past the episode's end a policy still sends a whole horizon: the training
                # targets hold the last action there (the dataset reader pads the same way).
                steps = np.arange(first, first + horizon).clip(max=len(actions) - 1)
                cell.submit_chunk(actions[steps], stamp=cell.time, dt=dt, sequence=k)
        arms = [i for i, arm in enumerate(cell.controller.arms) if arm.name in TASKS[task].arms]
        replayed = np.asarray(replayed).reshape(len(states), -1, 10)
        recorded = states.reshape(len(states), -1, 10)
        distance = np.linalg.norm(replayed[:, arms, :3] - recorded[:, arms, :3], axis=-1)  # (T, arms)
        return {
            "max": float(distance.max()),
            "mean": float(distance.mean()),
            "success": cell.success(),
            "frames": len(states),
        }
    finally:
        env.close()
