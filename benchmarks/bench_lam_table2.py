"""The paper's Table 2 on synthetic video: does the latent action encode motion or copy
appearance? Two tiny LAMs (Recon-Only and Triplet) are trained identically on moving
squares; for held-out pairs (I_t, I_t+k) with z = E(I_t, I_t+k):
    recon      = D(I_t, z)                   compared with I_t+k   (should be small for both)
    imagined   = D(recon, z)                 (z applied once more)
and distances of the imagined frame to I_t+k and to the reconstruction: a model whose
latent copies the target's appearance imagines a frame close to both (it collapses).
Also the two-step error of the composed latent R2 R1. Distances are MSE in DINOv2 feature
space, where the decoder predicts. Usage: python benchmarks/bench_lam_table2.py [--steps N]"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from rotvla_ros.data.synthetic import moving_squares  # noqa: E402
from rotvla_ros.model.config import tiny_lam_config  # noqa: E402
from rotvla_ros.model.lam import LatentActionModel  # noqa: E402
from rotvla_ros.model.so_n import compose  # noqa: E402

# Sub-patch motion (1-5 px per frame) and motion in whole DINOv2 patches (14 px, the square
# one patch wide), where a latent that copies the target's appearance is easiest to see.
MOTIONS = {"sub-patch": {}, "whole-patch": {"square": 14, "quantum": 14, "max_speed": 1}}


def train_and_evaluate(objective: str, steps: int, motion_name: str):
    motion = MOTIONS[motion_name]
    torch.manual_seed(0)
    lam = LatentActionModel(dataclasses.replace(tiny_lam_config(), objective=objective))
    optimiser = torch.optim.AdamW([p for p in lam.parameters() if p.requires_grad], lr=1e-3)
    data = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    for _ in range(steps):
        loss = lam.loss(moving_squares(32, 3, 56, generator=data, **motion))["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - started
    lam.eval()
    clips = moving_squares(256, 3, 56, generator=torch.Generator().manual_seed(99), **motion)
    with torch.no_grad():
        f = lam.features(clips)
        z = lam.encode(f[:, 0], f[:, 1]).rotation
        recon = lam.decode(f[:, 0], z)
        imagined = lam.decode(recon, z)
        z2 = lam.encode(f[:, 1], f[:, 2]).rotation
        composed = lam.decode(f[:, 0], compose(z2, z))
    return [
        objective,
        motion_name,
        steps,
        F.mse_loss(recon, f[:, 1]).item(),
        F.mse_loss(imagined, f[:, 1]).item(),
        F.mse_loss(imagined, recon).item(),
        F.mse_loss(imagined, f[:, 2]).item(),
        F.mse_loss(composed, f[:, 2]).item(),
        seconds / steps * 1e3,
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    rows = [
        train_and_evaluate(objective, args.steps, motion)
        for motion in MOTIONS
        for objective in ("reconstruction", "triplet")
    ]
    print_table(
        "LAM: Recon-Only vs Triplet on synthetic moving squares (paper Table 2)",
        [
            "objective",
            "motion",
            "steps",
            "d(recon, I_t+k)",
            "d(imagined, I_t+k)",
            "d(imagined, recon)",
            "d(imagined, I_t+2k)",
            "d(D(I_t, R2R1), I_t+2k)",
            "ms/step",
        ],
        rows,
        [
            "Larger d(imagined, I_t+k) and d(imagined, recon) at equal reconstruction error mean the latent "
            "moves the frame rather than copying the target (the paper's criterion)."
        ],
    )


if __name__ == "__main__":
    main()
