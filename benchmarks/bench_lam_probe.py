"""Does a Stage I LAM's latent carry the robot's motion? (issue 27 item 5: the LAM's quality,
reported with the comparison of the arms.) On the episodes of one or more datasets, against the
same LAM untrained (its frozen DINOv2 and architecture, the rest at initialisation):

- ``latent_use`` on triplets (frames r, r + k, r + 2k of one episode): the first reconstruction's
  error with each sample given another sample's latent, minus with its own (``model/lam.py``);
  near zero, the decoder ignores the latent. With ``rec1`` and what copying the frame scores.
- a linear probe: ridge regression from each frame's latent action (the Stage II/III label of
  frame r: r -> r + k, q n x n matrices) to each arm's end-effector displacement over the same
  k frames, fitted on four episodes of five and scored on the fifth: R^2 per axis.

Usage: python benchmarks/bench_lam_probe.py LAM --dataset DS [--dataset DS ...]
           [--stride 5] [--camera head] [--episodes 25] [--triplets 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

from rotvla_common.action_space import ARM_ACTION_FIELDS, POSITION_FIELDS  # noqa: E402
from rotvla_ros.data.lerobot_dataset import LeRobotV3Dataset  # noqa: E402
from rotvla_ros.model.lam import LatentActionModel  # noqa: E402
from rotvla_ros.policy.checkpoint import load_lam  # noqa: E402
from rotvla_ros.train.latent_labels import compute_labels  # noqa: E402

HELD_OUT = 5  # every fifth episode is scored, the others fit the probe
RIDGE = 1.0  # on standardised latents; fixed, not tuned on the held-out episodes
ARMS = ("left", "right")


def ridge_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> np.ndarray:
    """R^2 per column of ``y`` (N, D) on the rows not in ``train`` (N,) bool, of a ridge fit of
    ``y`` on ``x`` (N, F) over the ``train`` rows."""
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mean) / std  # (N, F)
    design = np.c_[z, np.ones(len(z))]  # (N, F + 1)
    a = design[train]
    weights = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ y[train])  # (F + 1, D)
    residual = y[~train] - design[~train] @ weights
    total = y[~train] - y[~train].mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a column that never moves: nan, shown as "-"
        return 1.0 - (residual**2).sum(0) / (total**2).sum(0)


@torch.no_grad()
def triplet_losses(lam, dataset: LeRobotV3Dataset, rows: np.ndarray, camera: str, stride: int) -> dict[str, float]:
    """The LAM's losses (eval mode: no reversed triplets) on the triplets starting at ``rows``."""
    size = lam.config.dino.image_size
    totals: dict[str, float] = {}
    for start in range(0, len(rows), 32):
        batch = rows[start : start + 32]
        frames = np.stack(
            [[dataset.frame(camera, dataset.same_episode(int(r), k * stride), size) for k in range(3)] for r in batch]
        )  # (B, 3, S, S, 3)
        pixels = torch.from_numpy(frames).float().div_(255).movedim(-1, -3)  # (B, 3, 3, S, S)
        losses = lam.loss(pixels)
        for key in ("rec1", "rec1_copying", "latent_use"):
            totals[key] = totals.get(key, 0.0) + float(losses[key]) * len(batch)
    return {key: value / len(rows) for key, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lam", help="a Stage I checkpoint directory")
    parser.add_argument("--dataset", action="append", required=True, help="LeRobot v3 dataset with a state")
    parser.add_argument("--stride", type=int, default=5, help="frames between a latent's two frames (training's)")
    parser.add_argument("--camera", default="head", help="the LAM's camera (training's latent_camera)")
    parser.add_argument("--episodes", type=int, default=25, help="episodes per dataset (the first ones)")
    parser.add_argument("--triplets", type=int, default=256, help="held-out triplets for latent_use")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    trained = load_lam(Path(args.lam)).eval()
    untrained = LatentActionModel(trained.config).eval()
    untrained.dino.load_state_dict(trained.dino.state_dict())  # the same frozen features
    width = len(ARM_ACTION_FIELDS)
    xyz = [arm * width + k for arm in range(len(ARMS)) for k in range(len(POSITION_FIELDS))]
    names = [f"{arm} {axis}" for arm in ARMS for axis in POSITION_FIELDS]
    rng = np.random.default_rng(args.seed)
    rows_out, moving = [], None
    for root in args.dataset:
        dataset = LeRobotV3Dataset(root, cameras=[args.camera])
        episodes = sorted(dataset.episodes)[: args.episodes]
        if len(episodes) < HELD_OUT:
            sys.exit(f"{root}: {len(episodes)} episodes; the probe holds out every {HELD_OUT}th: at least {HELD_OUT}")
        rows = np.concatenate([np.arange(r.start, r.stop) for r in map(dataset.episode_rows, episodes)])
        held_out = np.isin(dataset.episode_index[rows], episodes[HELD_OUT - 1 :: HELD_OUT])
        ahead = np.array([dataset.same_episode(int(r), args.stride) for r in rows])
        motion = dataset.state[ahead][:, xyz] - dataset.state[rows][:, xyz]  # (N, 6): each arm's displacement
        moving = np.abs(motion).max(0) > 1e-3  # an arm that never moves has nothing to probe
        triplets = rng.choice(rows[held_out], size=min(args.triplets, int(held_out.sum())), replace=False)
        for name, lam in (("trained", trained), ("untrained", untrained)):
            labels = compute_labels(dataset, lam, args.camera, args.stride, episodes=episodes)[rows]
            r2 = ridge_r2(labels.reshape(len(rows), -1), motion, ~held_out)
            losses = triplet_losses(lam, dataset, triplets, args.camera, args.stride)
            rows_out.append(
                [
                    Path(root).name,
                    name,
                    f"{losses['latent_use']:.4f}",
                    f"{losses['rec1']:.4f} ({losses['rec1_copying']:.4f})",
                    " / ".join(f"{v:.2f}" if m else "-" for v, m in zip(r2, moving)),
                ]
            )
    print_table(
        f"the LAM {args.lam}: does its latent carry the motion?",
        ["dataset", "LAM", "latent_use", "rec1 (copying)", f"probe R^2 ({', '.join(names)})"],
        rows_out,
        [
            f"stride {args.stride} frames, camera {args.camera}, the first {args.episodes} episodes of each "
            f"dataset, every {HELD_OUT}th held out; ridge {RIDGE} on standardised latents; '-': an arm that "
            "does not move"
        ],
    )


if __name__ == "__main__":
    main()
