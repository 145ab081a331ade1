"""The unified action expert: a DiT (adaLN-Zero time conditioning, Peebles & Xie 2023) that
denoises the latent plan and the robot actions jointly, attending to the vision-language
prefix with the structured attention of paper Sec. 3.3.

Token layout inside the expert: ``[latent plan tokens (K) | robot action tokens (H)]``.
Every block's attention takes its queries from these tokens and its keys/values from the
prefix AND these tokens, with the mask

    latent plan  -> prefix, latent plan           (never robot actions)
    robot action -> prefix, latent plan, robot actions

so the plan is the same function of the observation whether or not actions are denoised
beside it (Stage II, plan only, and Stage III share the plan path), and actions are
conditioned on the plan. The prefix is not updated by the expert: each block projects it to
keys and values once per inference (``prefix_cache``), and all denoising steps reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ActionExpertConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as in DiT): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


@dataclass
class PrefixCache:
    """Per-block keys and values of the prefix, computed once per inference."""

    keys: list[torch.Tensor]  # each (B, heads, N, head_dim)
    values: list[torch.Tensor]
    mask: torch.Tensor  # (B, N) True where the prefix token is valid
    sampling: SamplingBuffers | None = None


@dataclass
class SamplingBuffers:
    """What every denoising step of one chunk shares, built once (``for_sampling``): per block,
    a (B, heads, N + T, head_dim) buffer of keys and one of values holding the prefix's, into
    whose tail each step writes its own tokens' (no concatenation, no allocation: static
    shapes a CUDA graph can capture), and the attention bias (B, 1, T, N + T) as an additive
    float mask, the form the fused attention kernels take."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    bias: torch.Tensor
    with_actions: bool


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, context_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.prefix_kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaln[-1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.adaln[-1].bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.view(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, h, T, d/h)

    def prefix_keys_values(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.prefix_kv(prefix).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x, cond, prefix_k, prefix_v, attn_mask, key_buffer=None, value_buffer=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(cond).chunk(6, dim=-1)
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if key_buffer is not None:  # sampling: the tokens' keys/values into the buffers' tail
            prefix_len = prefix_k.shape[2]
            key_buffer[:, :, prefix_len:].copy_(k)
            value_buffer[:, :, prefix_len:].copy_(v)
            k, v = key_buffer, value_buffer  # (B, h, N + T, d/h)
        else:
            k = torch.cat([prefix_k, k], dim=2)  # (B, h, N + T, d/h)
            v = torch.cat([prefix_v, v], dim=2)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, T, d/h)
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = x + gate1[:, None] * self.proj(attended)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class UnifiedActionExpert(nn.Module):
    """Velocity field over [latent plan | robot actions] given the prefix and time."""

    def __init__(
        self,
        config: ActionExpertConfig,
        context_dim: int,
        plan_tokens: int,
        plan_token_dim: int,
        action_horizon: int,
        action_dim: int,
    ):
        super().__init__()
        dim = config.dim
        self.plan_tokens, self.action_horizon = plan_tokens, action_horizon
        self.context_norm = nn.LayerNorm(context_dim)
        self.plan_in = nn.Linear(plan_token_dim, dim)
        self.plan_pos = nn.Parameter(torch.randn(plan_tokens, dim) * 0.02)
        self.action_in = nn.Linear(action_dim, dim)
        self.action_pos = nn.Parameter(torch.randn(action_horizon, dim) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(
            DiTBlock(dim, config.num_heads, config.mlp_ratio, context_dim) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        nn.init.zeros_(self.final_adaln[-1].weight)
        nn.init.zeros_(self.final_adaln[-1].bias)
        self.plan_out = nn.Linear(dim, plan_token_dim)
        self.action_out = nn.Linear(dim, action_dim)
        self.dim = dim
        self.activation_checkpointing = False  # training: recompute each block's activations in backward

    def prefix_cache(self, prefix: torch.Tensor, prefix_mask: torch.Tensor) -> PrefixCache:
        """Project the prefix (B, N, C) once for every block."""
        prefix = self.context_norm(prefix.to(self.plan_in.weight.dtype))
        keys, values = zip(*(block.prefix_keys_values(prefix) for block in self.blocks))
        return PrefixCache(list(keys), list(values), prefix_mask)

    def for_sampling(self, cache: PrefixCache, with_actions: bool) -> PrefixCache:
        """``cache`` with the buffers every denoising step of a chunk shares (``SamplingBuffers``)."""
        tokens = self.plan_tokens + (self.action_horizon if with_actions else 0)
        keys, values = [], []
        for prefix_k, prefix_v in zip(cache.keys, cache.values):
            batch, heads, prefix_len, head_dim = prefix_k.shape
            for prefix, buffers in ((prefix_k, keys), (prefix_v, values)):
                buffer = prefix.new_empty(batch, heads, prefix_len + tokens, head_dim)
                buffer[:, :, :prefix_len] = prefix
                buffers.append(buffer)
        allowed = self.attention_mask(cache.mask, with_actions)
        dtype = cache.keys[0].dtype
        bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        bias.masked_fill_(~allowed, torch.finfo(dtype).min)
        sampling = SamplingBuffers(keys, values, bias, with_actions)
        return PrefixCache(cache.keys, cache.values, cache.mask, sampling)

    def attention_mask(self, prefix_mask: torch.Tensor, with_actions: bool) -> torch.Tensor:
        """Boolean (B, 1, T, N + T) mask, True = may attend (see the module docstring)."""
        batch, prefix_len = prefix_mask.shape
        k, h = self.plan_tokens, self.action_horizon if with_actions else 0
        own = torch.ones(k + h, k + h, dtype=torch.bool, device=prefix_mask.device)
        own[:k, k:] = False  # latent plan never sees robot actions
        prefix = prefix_mask[:, None, None, :].expand(batch, 1, k + h, prefix_len)
        return torch.cat([prefix, own.expand(batch, 1, k + h, k + h)], dim=-1)

    def forward(
        self,
        plan: torch.Tensor,
        actions: torch.Tensor | None,
        t: torch.Tensor,
        cache: PrefixCache,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """plan (B, K, n*n), actions (B, H, A) or None (Stage II), t (B,) ->
        velocities of the same shapes."""
        dtype = self.plan_in.weight.dtype
        tokens = [self.plan_in(plan.to(dtype)) + self.plan_pos]
        if actions is not None:
            tokens.append(self.action_in(actions.to(dtype)) + self.action_pos)
        x = torch.cat(tokens, dim=1)  # (B, K + H, D)
        cond = self.time_mlp(timestep_embedding(t, self.dim).to(dtype))  # (B, D)
        sampling = cache.sampling
        if sampling is not None and not torch.is_grad_enabled():
            if sampling.with_actions != (actions is not None):
                raise ValueError("these sampling buffers were built for another token layout")
            for block, k, v, key_buffer, value_buffer in zip(
                self.blocks, cache.keys, cache.values, sampling.keys, sampling.values
            ):
                x = block(x, cond, k, v, sampling.bias, key_buffer, value_buffer)
        else:
            mask = self.attention_mask(cache.mask, actions is not None)
            for block, k, v in zip(self.blocks, cache.keys, cache.values):
                if self.activation_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, cond, k, v, mask, use_reentrant=False)
                else:
                    x = block(x, cond, k, v, mask)
        shift, scale = self.final_adaln(cond).chunk(2, dim=-1)
        x = modulate(self.final_norm(x), shift, scale)
        plan_velocity = self.plan_out(x[:, : self.plan_tokens])
        action_velocity = self.action_out(x[:, self.plan_tokens :]) if actions is not None else None
        return plan_velocity, action_velocity
