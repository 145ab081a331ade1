"""Image augmentations of training batches (seeded by the run's own generator) and the
conversion of decoded frames to tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def color_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation jitter per sample; images (B, ..., 3, H, W) in [0, 1]."""
    shape = (images.shape[0],) + (1,) * (images.dim() - 1)
    factors = [1 + strength * (2 * torch.rand(shape, generator=generator) - 1) for _ in range(3)]
    factors = [f.to(images.device, images.dtype) for f in factors]
    images = images * factors[0]
    mean = images.mean(dim=(-1, -2, -3), keepdim=True)
    images = (images - mean) * factors[1] + mean
    grey = images.mean(dim=-3, keepdim=True)
    return ((images - grey) * factors[2] + grey).clamp(0, 1)


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 (..., H, W, 3) arrays -> float (..., 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(frames)).float().div_(255).movedim(-1, -3)


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each view of each sample by up to ``pixels`` in x and y, edge-padded (DrQ's
    augmentation); images (B, V, 3, H, W)."""
    batch, views, channels, height, width = images.shape
    flat = images.reshape(batch * views, channels, height, width)
    padded = F.pad(flat, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (batch * views, 2), generator=generator)
    shifted = torch.stack([padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())])
    return shifted.reshape(images.shape)
