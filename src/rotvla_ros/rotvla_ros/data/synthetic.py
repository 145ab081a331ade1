"""Synthetic videos with known motion, for testing and benchmarking the latent action model
without a dataset: coloured squares moving at a constant velocity per clip."""

from __future__ import annotations

import torch


def moving_squares(
    clips: int,
    frames: int,
    image_size: int,
    generator: torch.Generator | None = None,
    square: int | None = None,
    max_speed: int | None = None,
    quantum: int = 1,
    motion_from_colour: bool = False,
) -> torch.Tensor:
    """(clips, frames, 3, H, W) in [0, 1]: per clip, one square of a random colour that moves
    by a random velocity (vx, vy) every frame and wraps around the image edges. Positions
    and velocities are multiples of ``quantum`` pixels (the patch size gives motion in
    whole patches); speeds are at most ``max_speed`` quanta per frame. With
    ``motion_from_colour`` the velocity is a function of the colour, so that the next frame
    follows from the current one, as a scripted demonstration's next motion follows from the
    scene."""
    square = square or max(4, image_size // 4)
    max_speed = max_speed or max(1, image_size // (10 * quantum))
    video = torch.full((clips, frames, 3, image_size, image_size), 0.1)
    start = torch.randint(0, image_size // quantum, (clips, 2), generator=generator) * quantum
    velocity = torch.randint(-max_speed, max_speed + 1, (clips, 2), generator=generator) * quantum
    colour = 0.4 + 0.6 * torch.rand((clips, 3), generator=generator)
    if motion_from_colour:
        velocity = torch.round((colour[:, :2] - 0.7) / 0.3 * max_speed).long() * quantum
    offsets = torch.arange(square)
    for clip in range(clips):
        for step in range(frames):
            y0, x0 = (start[clip] + step * velocity[clip]).tolist()
            rows = (y0 + offsets) % image_size
            cols = (x0 + offsets) % image_size
            video[clip, step][:, rows[:, None], cols[None, :]] = colour[clip][:, None, None]
    return video
