"""RotVLA: the InternVL3.5 backbone and the unified flow-matching action expert.

Tensors in, tensors out. Stage II (``mode="stage2"``) denoises latent-action chunks only;
Stage III (``mode="stage3"``) jointly denoises [latent plan | robot actions] (Eq. 14) with
the structured attention of ``action_expert``. Robot actions (and the robot state, fed as one
more prefix token when ``config.use_state``) are normalised here (the policy owns the
statistics).

The latent plan is flow-matched as the entries of its K rotation matrices (in [-1, 1]);
a sample is projected back onto SO(n) at the end, so every published plan is a rotation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .action_expert import PrefixCache, UnifiedActionExpert
from .config import RotVLAConfig
from .flow_matching import FlowNoise, euler_sample, interpolate, sample_time
from .so_n import project_to_so_n
from .vlm import VisionLanguageBackbone


class RotVLA(nn.Module):
    def __init__(self, config: RotVLAConfig, backbone_hf_config=None, tokenizer=None):
        """``backbone_hf_config``/``tokenizer``: rebuild the backbone exactly as a checkpoint
        stored it (see ``VisionLanguageBackbone``)."""
        super().__init__()
        if config.mode not in ("stage2", "stage3"):
            raise ValueError(f"unknown mode {config.mode!r} (stage2 or stage3)")
        if config.mode == "stage2" and not config.latent_planner:
            raise ValueError("stage2 learns the latent plan only: it needs latent_planner")
        self.config = config
        self.backbone = VisionLanguageBackbone(config.vlm, config.image_size, backbone_hf_config, tokenizer)
        self.expert = UnifiedActionExpert(
            config.expert,
            context_dim=self.backbone.hidden_size,
            plan_tokens=config.plan_tokens,
            plan_token_dim=config.latent_dim**2,
            action_horizon=config.action_horizon,
            action_dim=config.action_dim,
        )
        # The state token lives in the language model's space, beside the image and text tokens.
        self.state_in = nn.Linear(config.action_dim, self.backbone.hidden_size) if config.use_state else None

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Training memory for compute: the backbone's layers and the expert's blocks keep no
        activations for backward and recompute them there (same gradients)."""
        if enabled:
            self.backbone.model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.backbone.model.activation_checkpointing_disable()
        self.expert.activation_checkpointing = enabled

    @property
    def with_actions(self) -> bool:
        return self.config.mode == "stage3"

    def prefix_features(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        state_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, V, 3, H, W) in [0, 1], state (B, A) normalised (``use_state``) -> the
        vision-language prefix (B, N, C) and its mask (B, N), True = valid. ``view_mask``
        (B, V) and ``state_mask`` (B,) mark views and states a training sample lacks (a
        dataset without that camera or that state): masked out, as padding is."""
        prefix, mask = self.backbone(images, input_ids, attention_mask, view_mask)  # (B, N, C), (B, N)
        if self.state_in is not None:
            if state is None:
                raise ValueError("this model takes the robot state (use_state): pass state")
            token = self.state_in(state.to(prefix.dtype))[:, None]  # (B, 1, C)
            prefix = torch.cat([prefix, token], dim=1)  # (B, N + 1, C)
            valid = torch.ones_like(mask[:, :1]) if state_mask is None else state_mask.to(mask.dtype)[:, None]
            mask = torch.cat([mask, valid], dim=1)
        return prefix, mask

    def encode_prefix(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        state_mask: torch.Tensor | None = None,
    ) -> PrefixCache:
        """``prefix_features`` projected to the expert's per-block keys/values."""
        return self.expert.prefix_cache(
            *self.prefix_features(images, input_ids, attention_mask, state, view_mask, state_mask)
        )

    def loss(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        plan: torch.Tensor,
        actions: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        noise: FlowNoise | None = None,
        view_mask: torch.Tensor | None = None,
        state_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss. plan (B, K, n, n) latent actions from the frozen LAM;
        actions (B, H, A) normalised robot actions (Stage III only); state (B, A); ``noise``
        the draws to use (default: new ones from the global generator); the masks as in
        ``prefix_features``."""
        cache = self.encode_prefix(images, input_ids, attention_mask, state, view_mask, state_mask)
        batch = plan.shape[0]
        plan_flat = plan.flatten(2)  # (B, K, n*n); K = 0 without the latent planner
        if noise is None:
            noise = FlowNoise(
                sample_time(batch, self.config.flow, device=plan.device),
                torch.randn_like(plan_flat),
                torch.randn_like(actions) if self.with_actions and actions is not None else None,
            )
        t = noise.t
        plan_t, plan_target = interpolate(plan_flat, noise.plan.to(plan_flat.dtype), t)
        action_t = action_target = None
        if self.with_actions:
            if actions is None:
                raise ValueError("stage3 needs robot actions")
            action_t, action_target = interpolate(actions, noise.actions.to(actions.dtype), t)
        plan_v, action_v = self.expert(plan_t, action_t, t, cache)
        losses, total = {}, plan_v.new_zeros((), dtype=torch.float32)
        if self.config.plan_tokens:
            losses["plan_loss"] = F.mse_loss(plan_v.float(), plan_target.float())
            total = (
                self.config.flow.latent_loss_weight * losses["plan_loss"] if self.with_actions else losses["plan_loss"]
            )
        if self.with_actions:
            losses["action_loss"] = F.mse_loss(action_v.float(), action_target.float())
            total = total + losses["action_loss"]
        losses["loss"] = total
        return losses

    def plan_shape(self, batch: int) -> tuple[int, int, int, int]:
        """(B, K, n, n) of the latent plan (K = 0 without the planner)."""
        return batch, self.config.plan_tokens, self.config.latent_dim, self.config.latent_dim

    def initial_noise(self, batch: int, device, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        c = self.config
        shapes = [(batch, c.plan_tokens, c.latent_dim**2)]
        if self.with_actions:
            shapes.append((batch, c.action_horizon, c.action_dim))
        return [torch.randn(shape, generator=generator, device=device) for shape in shapes]

    @torch.no_grad()
    def denoise(
        self,
        cache: PrefixCache,
        noise: list[torch.Tensor],
        on_step: Callable[[int], None] | None = None,
    ) -> list[torch.Tensor]:
        """Integrate the flow from ``noise`` (see ``initial_noise``), reusing ``cache`` at every
        step -> [plan (B, K, n*n), actions (B, H, A) normalised (Stage III)] in float32, the
        plan not yet projected onto SO(n). Static shapes and no host synchronisation (without
        ``on_step``): what ``rotvla_ros.model.fast_sampling`` captures as one CUDA graph."""
        if cache.sampling is None:
            cache = self.expert.for_sampling(cache, self.with_actions)

        def velocity(xs, t):
            plan_v, action_v = self.expert(xs[0], xs[1] if self.with_actions else None, t, cache)
            return [plan_v.to(xs[0].dtype)] + ([action_v.to(xs[1].dtype)] if self.with_actions else [])

        return euler_sample(velocity, noise, self.config.flow.num_steps, on_step)

    def project_plan(self, plan: torch.Tensor) -> torch.Tensor:
        """A denoised plan (B, K, n*n) -> (B, K, n, n) on SO(n)."""
        n = self.config.latent_dim
        plan = plan.unflatten(-1, (n, n))  # (B, K, n, n)
        return project_to_so_n(plan) if plan.shape[1] else plan

    @torch.no_grad()
    def sample(
        self,
        cache: PrefixCache,
        noise: list[torch.Tensor],
        on_step: Callable[[int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``denoise`` -> plan (B, K, n, n) on SO(n), normalised actions (B, H, A) or None."""
        xs = self.denoise(cache, noise, on_step)
        return self.project_plan(xs[0]), (xs[1] if self.with_actions else None)


def open_zero_gates(model: RotVLA, std: float = 0.2) -> RotVLA:
    """Random weights for comparing two inference paths: adaLN-Zero starts every expert block
    as the identity (its gates are zero), so that a fresh model's chunk depends on the noise
    alone and any two paths agree whatever they do to the prefix. Draws those zeros from
    N(0, std) instead, in place; returns ``model``."""
    with torch.no_grad():
        for parameter in model.expert.parameters():
            if not parameter.any():
                parameter.normal_(0.0, std)
    return model
