"""Latent-action labels of a dataset, computed once with the frozen Stage I LAM and cached on
disk: Stages II and III read them instead of running DINOv2 and the LAM encoder on every clip
of every batch (benchmarks/bench_demos.py measures the difference).

The label of frame ``i`` is the latent action from it to frame ``i + stride`` of the same
episode (clamped to its last frame): ``encode(f[i], f[i + stride])``, (q, n, n). The latent
plan of a sample at row ``r`` is then the labels of ``r, r + stride, ..., r + (H - 1) stride``
(clamped the same way): exactly the consecutive pairs of the clip ``r, r + stride, ...`` that
the LAM labels live. Each frame's DINOv2 features are computed once per episode.

The cache file is keyed by the LAM checkpoint's id (its weights' hash), the camera, the
stride and the dataset's identity (path, frame count, fps): a different LAM or clip setting
gets a file of its own, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data.lerobot_dataset import LeRobotV3Dataset


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rotvla" / "latent_labels"


def cache_path(cache_dir: Path, dataset: LeRobotV3Dataset, lam_id: str, camera: str, stride: int) -> Path:
    identity = {
        "dataset": str(dataset.root.resolve()),
        "frames": len(dataset),
        "fps": dataset.fps,
        "episodes": len(dataset.episodes),
        "lam": lam_id,
        "camera": camera,
        "stride": stride,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{dataset.root.name}-{camera}-s{stride}-{key}.npy"


@torch.no_grad()
def compute_labels(
    dataset: LeRobotV3Dataset, lam, camera: str, stride: int, device="cpu", batch: int = 64, episodes=None
) -> np.ndarray:
    """(N, q, n, n) float32: every frame's latent action ``stride`` frames ahead (of the
    ``episodes`` given, by index; the other rows stay zero)."""
    size = lam.config.dino.image_size
    q, n = lam.config.num_latent_tokens, lam.config.latent_dim
    labels = np.zeros((len(dataset), q, n, n), dtype=np.float32)
    for episode in dataset.episodes if episodes is None else episodes:
        rows = dataset.episode_rows(episode)
        features = []
        for start in range(rows.start, rows.stop, batch):
            frames = np.stack([dataset.frame(camera, r, size) for r in range(start, min(start + batch, rows.stop))])
            pixels = torch.from_numpy(frames).to(device).float().div_(255).movedim(-1, -3)[:, None]  # (B, 1, 3, S, S)
            features.append(lam.features(pixels)[:, 0])  # (B, P, C)
        features = torch.cat(features)  # (T, P, C)
        ahead = torch.clamp(torch.arange(len(rows)) + stride, max=len(rows) - 1)
        for start in range(0, len(rows), batch):
            index = torch.arange(start, min(start + batch, len(rows)))
            rotation = lam.encode(features[index], features[ahead[index]]).rotation  # (B, q, n, n)
            labels[rows.start + index.numpy()] = rotation.float().cpu().numpy()
    return labels


def latent_labels(
    dataset: LeRobotV3Dataset, lam, lam_id: str, camera: str, stride: int, cache_dir: Path | None = None, device="cpu"
) -> np.ndarray:
    """The labels, from the cache when it has them (computed and written otherwise)."""
    path = cache_path(Path(cache_dir or default_cache_dir()), dataset, lam_id, camera, stride)
    if path.exists():
        labels = np.load(path)
        if labels.shape[0] == len(dataset):
            return labels
    labels = compute_labels(dataset, lam, camera, stride, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(staging, labels)
    staging.replace(path)  # atomic: a concurrent reader sees the whole file or none
    return labels


def plan_rows(dataset: LeRobotV3Dataset, row: int, stride: int, horizon: int) -> list[int]:
    """Rows whose labels make the latent plan of ``row``: r, r + stride, ... (same episode)."""
    return [dataset.same_episode(row, k * stride) for k in range(horizon)]
