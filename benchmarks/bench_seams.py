"""Seam smoothness of three ways to execute overlapping action chunks, at a 200 Hz control
rate: our scheduler (blend over ``overlap`` steps, C1 Hermite, time-aligned), naive
switching (the newest chunk from its first future step, linear between steps), and ACT's
temporal ensembling (every chunk's prediction for now, weighted exp(-m * i), i = 0 the
oldest; linear between steps).

A simulated policy moves an end effector along a smooth path; each chunk (horizon 20,
dt 50 ms, computed every 100 ms with 60 ms of inference latency) carries that path plus its
own error: an offset (chunks disagree with each other) and per-step noise. Reported over
the commanded position (one arm, xyz):

- max step: largest position change in one control period (a jump shows here);
- max dv: largest velocity change between consecutive periods (m/s; a seam kink);
- p99 accel: 99th percentile of |acceleration| (m/s^2);
- lag: mean distance to the true path (what smoothing costs in tracking).

Usage: python benchmarks/bench_seams.py [--seeds 5] [--disagreement 0.01] [--noise 0.002]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from arx_r5_driver.chunks import Chunk  # noqa: E402
from arx_r5_driver.scheduler import ActionLayout, ChunkScheduler, Setpoint  # noqa: E402
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES  # noqa: E402

CONTROL_PERIOD = 0.005
DT, HORIZON = 0.05, 20
CHUNK_EVERY, LATENCY = 0.1, 0.06
DURATION = 4.0
LAYOUT = ActionLayout.from_names(NAMES)


def true_path(t: np.ndarray) -> np.ndarray:
    """(T, 3): a smooth figure in front of the arm, ~0.15 m/s."""
    return np.stack([0.30 + 0.05 * np.sin(1.5 * t), 0.06 * np.sin(3.0 * t), 0.20 + 0.03 * np.cos(1.5 * t)], axis=-1)


def make_chunks(rng, disagreement: float, noise: float) -> list[tuple[float, Chunk]]:
    """(arrival time, chunk) pairs; each chunk's stamp is its observation's capture time."""
    out = []
    for k, stamp in enumerate(np.arange(0.0, DURATION, CHUNK_EVERY)):
        times = stamp + DT * np.arange(HORIZON)
        xyz = true_path(times) + rng.normal(0, disagreement, 3) + rng.normal(0, noise, (HORIZON, 3))
        actions = np.zeros((HORIZON, len(NAMES)))
        for base in (0, 10):
            actions[:, base : base + 3] = xyz
            actions[:, base + 3 : base + 9] = [1, 0, 0, 0, 1, 0]
            actions[:, base + 9] = 0.04
        out.append((stamp + LATENCY, Chunk(stamp, DT, actions, sequence=k)))
    return out


def ours(chunks, overlap: int) -> np.ndarray:
    scheduler = ChunkScheduler(LAYOUT, overlap_steps=overlap)
    rest = Setpoint(
        np.array([[*true_path(np.array([0.0]))[0], 0.04]] * 2),
        np.zeros((2, 4)),
        Rotation.concatenate([Rotation.identity()] * 2),
        np.zeros((2, 3)),
    )
    pending, out = list(chunks), []
    for t in control_times():
        while pending and pending[0][0] <= t:
            scheduler.submit(pending.pop(0)[1], t, rest)
        out.append(scheduler.sample(t).linear[0, :3] if scheduler.active else rest.linear[0, :3])
    return np.array(out)


def interpolate(chunk: Chunk, t: float) -> np.ndarray:
    due = chunk.due_times(0.0)
    return np.array([np.interp(t, due, chunk.actions[:, j]) for j in range(3)])


def naive(chunks) -> np.ndarray:
    pending, current, out = list(chunks), None, []
    start = true_path(np.array([0.0]))[0]
    for t in control_times():
        while pending and pending[0][0] <= t:
            current = pending.pop(0)[1]
        out.append(interpolate(current, t) if current is not None else start)
    return np.array(out)


def temporal_ensembling(chunks, m: float) -> np.ndarray:
    pending, received, out = list(chunks), [], []
    start = true_path(np.array([0.0]))[0]
    for t in control_times():
        while pending and pending[0][0] <= t:
            received.append(pending.pop(0)[1])
        live = [c for c in received if c.due_times(0.0)[-1] >= t]
        if not live:
            out.append(out[-1] if out else start)
            continue
        weights = np.exp(-m * np.arange(len(live)))  # i = 0: the oldest (ACT)
        predictions = np.array([interpolate(c, t) for c in live])
        out.append((weights[:, None] * predictions).sum(0) / weights.sum())
    return np.array(out)


def control_times() -> np.ndarray:
    return np.arange(LATENCY + CONTROL_PERIOD, DURATION, CONTROL_PERIOD)


def metrics(path: np.ndarray) -> list[float]:
    """Over the steady state: from 0.5 s on (the first chunk's start from rest is no seam)."""
    steady = control_times() >= 0.5
    path, times = path[steady], control_times()[steady]
    step = np.linalg.norm(np.diff(path, axis=0), axis=1)
    velocity = np.diff(path, axis=0) / CONTROL_PERIOD
    dv = np.linalg.norm(np.diff(velocity, axis=0), axis=1)
    lag = np.linalg.norm(path - true_path(times), axis=1)
    return [step.max() * 1e3, dv.max(), np.percentile(dv / CONTROL_PERIOD, 99), lag.mean() * 1e3]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--disagreement", type=float, default=0.01, help="per-chunk offset std, m")
    parser.add_argument("--noise", type=float, default=0.002, help="per-step noise std, m")
    args = parser.parse_args()
    methods = {
        "ours, overlap 4": lambda c: ours(c, 4),
        "ours, overlap 8": lambda c: ours(c, 8),
        "naive switching": naive,
        "temporal ensembling m=0.01": lambda c: temporal_ensembling(c, 0.01),
        "temporal ensembling m=0.1": lambda c: temporal_ensembling(c, 0.1),
    }
    results = {name: [] for name in methods}
    for seed in range(args.seeds):
        chunks = make_chunks(np.random.default_rng(seed), args.disagreement, args.noise)
        for name, method in methods.items():
            results[name].append(metrics(method(chunks)))
    rows = [[name, *np.max(values, axis=0)[:3], np.mean(values, axis=0)[3]] for name, values in results.items()]
    print_table(
        "Seam smoothness at 200 Hz (worst over seeds; lag: mean)",
        ["method", "max step mm", "max dv m/s", "p99 accel m/s^2", "lag mm"],
        rows,
        [
            f"{args.seeds} seeds, chunks every {CHUNK_EVERY * 1e3:.0f} ms, horizon {HORIZON} x {DT * 1e3:.0f} ms, "
            f"latency {LATENCY * 1e3:.0f} ms, disagreement {args.disagreement * 1e3:.0f} mm, "
            f"noise {args.noise * 1e3:.0f} mm."
        ],
    )


if __name__ == "__main__":
    main()
