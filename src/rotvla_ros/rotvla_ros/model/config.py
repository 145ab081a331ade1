"""Plain dataclass configurations of the RotVLA models and their presets.

Two presets are built from the same code:
- ``rotvla-1.7b``: the paper's model (Sec. 4.1): InternVL3.5-1B (InternViT-300M vision,
  Qwen3-0.6B language), a 24-layer DiT action expert, a LAM on frozen DINOv2-B/14, n = 16.
- ``tiny``: the same architectures with small dimensions and random weights, for tests and
  the simulated default (a full predict in well under a second on two CPU cores).

Where the paper is silent, the choices are written next to the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

from rotvla_common.action_space import ARM_ACTION_FIELDS, ARMS, DUAL_ARM_EEF_ACTION_NAMES  # noqa: F401
DEFAULT_CAMERAS = ("head", "left_wrist", "right_wrist")


@dataclass
class SoftVQConfig:
    quantizer: str = "soft"  # "soft" (SoftVQ) or "vq" (discrete VQ-VAE baseline)
    codebook_size: int = 256  # not given by the paper
    temperature: float = 1.0
    kl_mode: str = "batch"  # "batch" or "sample": see soft_vq.py
    commitment: float = 0.25  # vq only (VQ-VAE's beta)
    init_scale: float = 0.1


@dataclass
class DinoConfig:
    """Frozen DINOv2 feature extractor (transformers ``Dinov2Model``)."""

    pretrained_path: str = ""  # local directory of real weights; empty: random init from dims
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 14
    image_size: int = 224


@dataclass
class LAMConfig:
    """Stage I latent action model (UniVLA's LAM layout with RotVLA's latent space)."""

    dino: DinoConfig = field(default_factory=DinoConfig)
    dim: int = 768
    encoder_layers: int = 12  # spatial-temporal blocks
    decoder_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    latent_dim: int = 16  # n: each latent token is an n x n rotation
    num_latent_tokens: int = 4  # latent tokens per frame transition (UniVLA uses 4)
    quantizer: SoftVQConfig = field(default_factory=SoftVQConfig)
    project_to_so_n: bool = True  # False: the "continuous, no SO(n)" ablation
    objective: str = "triplet"  # "triplet" (Eq. 12) or "reconstruction" (Recon-Only baseline)
    kl_weight: float = 0.01
    identity_weight: float = 1.0
    # Fraction of each training batch whose frame pair is replaced by an identical pair
    # (I_t, I_t), to anchor the identity element (Eq. 9).
    identity_pair_fraction: float = 0.125


@dataclass
class VisionConfig:
    """InternViT (transformers ``InternVLVisionConfig``)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 14
    # Native resolution of the position embeddings (InternViT's 448); other input sizes
    # (the policy's 224) are interpolated by transformers.
    image_size: int = 448


@dataclass
class TextConfig:
    """Qwen3 language model (transformers ``Qwen3Config``)."""

    vocab_size: int = 151936
    hidden_size: int = 1024
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 3072
    rope_theta: float = 1_000_000.0


@dataclass
class VLMConfig:
    """InternVL3.5 backbone. With ``pretrained_path`` the weights, the architecture and the
    tokenizer come from that local directory (HF format); otherwise the model is built with
    random weights from the dimensions below and text is tokenised as UTF-8 bytes."""

    pretrained_path: str = ""
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    downsample_ratio: float = 0.5  # pixel shuffle: 256 patches of a 224 image -> 64 tokens
    max_instruction_tokens: int = 48


@dataclass
class ActionExpertConfig:
    """DiT action expert with adaLN-Zero time conditioning (Peebles & Xie 2023)."""

    dim: int = 768
    num_layers: int = 24
    num_heads: int = 12
    mlp_ratio: float = 4.0


@dataclass
class FlowMatchingConfig:
    """openpi's pi0 convention: x_t = t * eps + (1 - t) * a, target u = eps - a, t from
    Beta(1.5, 1) scaled into [0.001, 1], Euler integration from t = 1 to 0 at inference."""

    num_steps: int = 10
    beta_alpha: float = 1.5
    beta_beta: float = 1.0
    t_min: float = 0.001
    latent_loss_weight: float = 1.0  # Stage III weight of the latent-plan part of Eq. 14


@dataclass
class RotVLAConfig:
    preset: str = "rotvla-1.7b"
    vlm: VLMConfig = field(default_factory=VLMConfig)
    expert: ActionExpertConfig = field(default_factory=ActionExpertConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    camera_names: tuple[str, ...] = DEFAULT_CAMERAS
    image_size: int = 224  # paper appendix C
    # Latent plan: latent_horizon future transitions x num_latent_tokens tokens, each an
    # n x n rotation (n = latent_dim), as produced by the LAM.
    latent_dim: int = 16
    num_latent_tokens: int = 4
    latent_horizon: int = 4
    # Robot actions (Stage III): horizon x len(action_names), one step every dt seconds.
    action_names: tuple[str, ...] = DUAL_ARM_EEF_ACTION_NAMES
    action_horizon: int = 30
    dt: float = 0.05
    # "stage2": denoise latent-action chunks only; "stage3": latent plan + robot actions.
    mode: str = "stage3"

    @property
    def plan_tokens(self) -> int:
        return self.latent_horizon * self.num_latent_tokens

    @property
    def action_dim(self) -> int:
        return len(self.action_names)


def tiny_lam_config() -> LAMConfig:
    return LAMConfig(
        dino=DinoConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56),
        dim=64,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        latent_dim=4,
        num_latent_tokens=2,
        quantizer=SoftVQConfig(codebook_size=32),
    )


def tiny_config() -> RotVLAConfig:
    return RotVLAConfig(
        preset="tiny",
        vlm=VLMConfig(
            vision=VisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56),
            text=TextConfig(
                vocab_size=260, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, intermediate_size=128,
            ),
            max_instruction_tokens=32,
        ),
        expert=ActionExpertConfig(dim=64, num_layers=2, num_heads=4),
        image_size=56,
        latent_dim=4,
        num_latent_tokens=2,
        latent_horizon=2,
        action_horizon=8,
    )


PRESETS = {"rotvla-1.7b": RotVLAConfig, "tiny": tiny_config}
LAM_PRESETS = {"rotvla-1.7b": LAMConfig, "tiny": tiny_lam_config}


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild a (nested) dataclass from ``to_dict`` output; unknown keys are an error, so
    a config written by an incompatible version fails loudly instead of loading wrongly."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else known[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, tuple) or "tuple" in str(hints[name]):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
