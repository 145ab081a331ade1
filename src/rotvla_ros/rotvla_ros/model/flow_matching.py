"""Flow matching in openpi's pi0 convention.

Noise is at t = 1 and data at t = 0: x_t = t * eps + (1 - t) * x, the target velocity is
u = eps - x, t ~ Beta(alpha, beta) scaled into [t_min, 1], and sampling integrates
dx/dt = v from t = 1 to t = 0 with ``num_steps`` Euler steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import FlowMatchingConfig


def sample_time(
    batch: int, config: FlowMatchingConfig, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) times in [t_min, 1], Beta(alpha, beta)-distributed before scaling: the Beta's
    inverse CDF of uniform draws (from ``generator`` when given: reproducible per sample)."""
    from scipy.special import betaincinv

    uniform = torch.rand(batch, generator=generator, dtype=torch.float64)
    t = torch.from_numpy(betaincinv(config.beta_alpha, config.beta_beta, uniform.numpy())).float()
    return (t * (1 - config.t_min) + config.t_min).to(device)


@dataclass
class FlowNoise:
    """A training batch's draws: times t (B,), the plan's noise (B, K, n*n) and the actions'
    (B, H, A) or None (Stage II)."""

    t: torch.Tensor
    plan: torch.Tensor
    actions: torch.Tensor | None = None

    def to(self, device) -> FlowNoise:
        return FlowNoise(*(x.to(device) if x is not None else None for x in (self.t, self.plan, self.actions)))


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sample x_t and target velocity u for data x (B, ...), noise like x, t (B,)."""
    t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return t * noise + (1 - t) * x, noise - x


def euler_sample(
    velocity: Callable[[list[torch.Tensor], torch.Tensor], list[torch.Tensor]],
    noise: list[torch.Tensor],
    num_steps: int,
    on_step: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Integrate from t = 1 (``noise``, a list of jointly denoised tensors) to t = 0.
    ``velocity(xs, t)`` returns one velocity per tensor; t is (B,). The time and the
    integrated state are float32 whatever the model computes in: in bfloat16, t = 0.9 would
    be 0.8984 and ten Euler updates would each lose the state's low bits."""
    xs = [x.float() for x in noise]
    batch = xs[0].shape[0]
    dt = -1.0 / num_steps
    for step in range(num_steps):
        t = torch.full((batch,), 1.0 + step * dt, device=xs[0].device, dtype=torch.float32)
        vs = velocity(xs, t)
        xs = [x + dt * v.float() for x, v in zip(xs, vs)]
        if on_step is not None:
            on_step(step)
    return xs
