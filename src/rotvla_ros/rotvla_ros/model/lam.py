"""Stage I: the latent action model with continuous rotational latent actions (Sec. 3.1).

Architecture (UniVLA's LAM as the reference, paper Sec. 4.1):
- frozen DINOv2 (transformers ``Dinov2Model``): patch tokens after the final LayerNorm,
  CLS (and any register tokens) dropped, (B, P, C) per frame;
- encoder: the current frame's patch tokens and their change to the following frame, with
  learnable latent-action query tokens appended to each, then
  spatial-temporal blocks (spatial attention within a frame, causal temporal attention
  across frames at each position); the last frame's query tokens are read out;
- head: an unconstrained n x n matrix per latent token -> SoftVQ -> projection onto SO(n);
- decoder: a transformer over [latent action tokens | current frame's patch tokens] that
  predicts the next frame's DINOv2 features as the current ones plus a change.

Training objective (``objective="triplet"``, Eq. 6-12) on frame triplets (I_t, I_t+k, I_t+2k):
    L = L_rec(t->t+k) + L_rec(t+k->t+2k) + L_comp + w_id * L_id + w_kl * L_KL
with L_comp the reconstruction of I_t+2k from I_t and R_comp = R2 R1. The paper defines the
identity element as the SO(n)-projected batch mean of identical-pair latents (Eq. 9) but not
the loss that anchors it; we use L_id = ||R_I - I||_F^2 / n, which makes the anchor coincide
with the canonical identity so that Eq. 10's plain product is the composition, and also
train those identical pairs to reconstruct their frame (no motion -> no change).
``objective="reconstruction"`` is the Recon-Only baseline (single steps only); the
quantizer and the SO(n) projection are switches too, for the paper's ablations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DinoConfig, LAMConfig
from .so_n import compose, identity_anchor, project_to_so_n
from .soft_vq import SoftVQ


def pretrained_dino_config(path: str, image_size: int) -> DinoConfig:
    """The DinoConfig of the DINOv2 directory ``path`` (its architecture), fed ``image_size``
    frames (position embeddings are interpolated; the paper's LAM takes 224)."""
    from transformers import Dinov2Config

    hf = Dinov2Config.from_pretrained(path)
    return DinoConfig(
        pretrained_path=str(path),
        hidden_size=hf.hidden_size,
        num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        patch_size=hf.patch_size,
        image_size=image_size,
        position_image_size=hf.image_size,
    )


def build_dino(config) -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    if config.pretrained_path:
        model = Dinov2Model.from_pretrained(config.pretrained_path)
    else:
        model = Dinov2Model(
            Dinov2Config(
                hidden_size=config.hidden_size,
                num_hidden_layers=config.num_hidden_layers,
                num_attention_heads=config.num_attention_heads,
                intermediate_size=config.intermediate_size,
                patch_size=config.patch_size,
                image_size=config.position_image_size or config.image_size,
            )
        )
    model.requires_grad_(False)
    return model.eval()


def random_rotations(count: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, n, n) rotations, Haar-distributed (QR of Gaussian matrices, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(count, n, n, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    sign = torch.sign(torch.linalg.det(q))  # (count,)
    return torch.cat([q[..., :1] * sign[:, None, None], q[..., 1:]], dim=-1)


class SpatialTemporalBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, tokens, dim = x.shape
        s = self.spatial_norm(x).reshape(batch * frames, tokens, dim)
        x = x + self.spatial_attn(s, s, s, need_weights=False)[0].view(batch, frames, tokens, dim)
        t = self.temporal_norm(x).transpose(1, 2).reshape(batch * tokens, frames, dim)
        causal = torch.ones(frames, frames, dtype=torch.bool, device=x.device).triu(1)  # True = masked
        t = self.temporal_attn(t, t, t, attn_mask=causal, need_weights=False)[0]
        x = x + t.view(batch, tokens, frames, dim).transpose(1, 2)
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class LatentActions:
    rotation: torch.Tensor  # (B, q, n, n): on SO(n) unless the projection is switched off
    quantizer_loss: torch.Tensor  # scalar
    perplexity: torch.Tensor  # scalar


class LatentActionModel(nn.Module):
    def __init__(self, config: LAMConfig):
        super().__init__()
        self.config = config
        self.dino = build_dino(config.dino)
        feature_dim = self.dino.config.hidden_size
        grid = config.dino.image_size // self.dino.config.patch_size
        self.num_patches = grid * grid
        dim, q, n = config.dim, config.num_latent_tokens, config.latent_dim
        self.encoder_in = nn.Linear(feature_dim, dim)
        self.latent_queries = nn.Parameter(torch.randn(q, dim) * 0.02)
        self.spatial_pos = nn.Parameter(torch.randn(self.num_patches + q, dim) * 0.02)
        self.temporal_pos = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.encoder = nn.ModuleList(
            SpatialTemporalBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n * n)
        # Default-scale weights: latents must differ between inputs from the first step, or
        # the decoder learns to ignore them and stays there.
        with torch.no_grad():
            self.head.bias.copy_(torch.eye(n).flatten())
        self.quantizer = SoftVQ(config.quantizer, n * n)
        with torch.no_grad():
            # Codewords spread over SO(n): a mixture of near-identical codewords would make
            # every latent the same rotation at the start and nothing to learn from.
            self.quantizer.codebook.copy_(random_rotations(config.quantizer.codebook_size, n).flatten(1))
        self.decoder_in = nn.Linear(feature_dim, dim)
        self.decoder_latent_in = nn.Linear(n * n, dim)
        self.decoder_pos = nn.Parameter(torch.randn(q + self.num_patches, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            config.num_heads,
            int(dim * config.mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerEncoder(layer, config.decoder_layers, enable_nested_tensor=False)
        self.decoder_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, feature_dim))
        with torch.no_grad():
            # The decoder predicts the change to the current frame and starts at "no change": it
            # need not first learn to copy the frame through its narrower width, which left the
            # reconstruction above that of copying for hundreds of steps.
            self.decoder_out[1].weight.zero_()
            self.decoder_out[1].bias.zero_()

    def train(self, mode: bool = True):
        super().train(mode)
        self.dino.eval()  # frozen, always in inference mode
        return self

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, 3, H, W) in [0, 1] -> DINOv2 patch features (B, T, P, C)."""
        from .vlm import IMAGE_MEAN, IMAGE_STD

        batch, steps = frames.shape[:2]
        mean = frames.new_tensor(IMAGE_MEAN).view(1, 3, 1, 1)
        std = frames.new_tensor(IMAGE_STD).view(1, 3, 1, 1)
        pixels = (frames.flatten(0, 1) - mean) / std
        hidden = self.dino(pixel_values=pixels).last_hidden_state  # (B*T, 1 + R + P, C), final LayerNorm applied
        patches = hidden[:, -self.num_patches :]  # drop CLS and any registers
        return patches.reshape(batch, steps, self.num_patches, -1)

    def encode(self, current: torch.Tensor, following: torch.Tensor) -> LatentActions:
        """DINOv2 features of two frames (B, P, C) each -> the latent action between them."""
        batch = current.shape[0]
        q, n = self.config.num_latent_tokens, self.config.latent_dim
        # The following frame enters as its change from the current one. Fed the two frames, the
        # encoder's latents hardly vary between samples at the start (the motion is a small part
        # of each frame's features), the decoder learns to predict the next frame from the current
        # one alone, and the latent stays unused (benchmarks/README.md, Stage I).
        x = self.encoder_in(torch.stack([current, following - current], dim=1))  # (B, 2, P, D)
        queries = self.latent_queries.expand(batch, 2, q, -1)
        x = torch.cat([x, queries], dim=2) + self.spatial_pos + self.temporal_pos[:, None]  # (B, 2, P+q, D)
        for block in self.encoder:
            x = block(x)
        raw = self.head(self.encoder_norm(x[:, -1, -q:]))  # (B, q, n*n)
        quantised = self.quantizer(raw)
        matrix = quantised.latent.unflatten(-1, (n, n))  # (B, q, n, n)
        rotation = project_to_so_n(matrix) if self.config.project_to_so_n else matrix.float()
        return LatentActions(rotation, quantised.loss, quantised.perplexity)

    def decode(self, current: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """Features of the current frame (B, P, C) and a latent action (B, q, n, n) ->
        predicted features of the next frame (B, P, C)."""
        latent = self.decoder_latent_in(rotation.flatten(2).to(current.dtype))  # (B, q, D)
        x = torch.cat([latent, self.decoder_in(current)], dim=1) + self.decoder_pos
        x = self.decoder(x)
        return current + self.decoder_out(x[:, self.config.num_latent_tokens :])

    def loss(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, 3, 3, H, W): triplets (I_t, I_t+k, I_t+2k) in [0, 1]."""
        f = self.features(frames)  # (B, 3, P, C)
        if self.training and self.config.time_reversal_fraction > 0:
            reverse = torch.rand(f.shape[0], device=f.device) < self.config.time_reversal_fraction
            f = torch.where(reverse[:, None, None, None], f.flip(1), f)
        z1 = self.encode(f[:, 0], f[:, 1])
        rec1 = F.mse_loss(self.decode(f[:, 0], z1.rotation), f[:, 1])
        z2 = self.encode(f[:, 1], f[:, 2])
        rec2 = F.mse_loss(self.decode(f[:, 1], z2.rotation), f[:, 2])
        losses = {"rec1": rec1, "rec2": rec2, "kl": (z1.quantizer_loss + z2.quantizer_loss) / 2}
        total = rec1 + rec2 + self.config.kl_weight * losses["kl"]
        if self.config.objective == "triplet":
            composed = compose(z2.rotation, z1.rotation)  # Eq. 10
            losses["comp"] = F.mse_loss(self.decode(f[:, 0], composed), f[:, 2])
            pairs = max(1, math.ceil(self.config.identity_pair_fraction * frames.shape[0]))
            still = self.encode(f[:pairs, 0], f[:pairs, 0])
            anchor = identity_anchor(still.rotation)  # (q, n, n), Eq. 9
            eye = torch.eye(self.config.latent_dim, device=anchor.device)
            losses["identity"] = ((anchor - eye) ** 2).sum((-1, -2)).mean() / self.config.latent_dim
            losses["identity_rec"] = F.mse_loss(self.decode(f[:pairs, 0], still.rotation), f[:pairs, 0])
            total = total + losses["comp"] + self.config.identity_weight * losses["identity"] + losses["identity_rec"]
        elif self.config.objective != "reconstruction":
            raise ValueError(f"unknown objective {self.config.objective!r} (triplet or reconstruction)")
        losses["perplexity"] = (z1.perplexity + z2.perplexity).detach() / 2
        with torch.no_grad():
            # How much the decoder relies on the latent: the first reconstruction again with every
            # sample given its neighbour's latent (0 for a batch of one). Near zero, the latent
            # carries nothing the decoder uses (a collapsed LAM), whatever the reconstruction says.
            swapped = F.mse_loss(self.decode(f[:, 0], z1.rotation.roll(1, 0)), f[:, 1])
            # What rec1 is worth: the decoder starts at "no change", i.e. copying the frame.
            losses["rec1_copying"] = F.mse_loss(f[:, 0], f[:, 1])
        losses["latent_use"] = swapped - rec1.detach()
        losses["loss"] = total
        return losses

    @torch.no_grad()
    def latent_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """Labels for Stage II/III: frames (B, T, 3, H, W) -> (B, T-1, q, n, n), the latent
        action of every consecutive pair."""
        f = self.features(frames)
        steps = [self.encode(f[:, i], f[:, i + 1]).rotation for i in range(f.shape[1] - 1)]
        return torch.stack(steps, dim=1)
