"""Plain dataclass configurations of the RotVLA models and their presets.

Two presets are built from the same code:
- ``rotvla-1.7b``: the paper's model (Sec. 4.1): InternVL3.5-1B (InternViT-300M vision,
  Qwen3-0.6B language), a 24-layer DiT action expert, a LAM on frozen DINOv2-B/14, n = 16.
- ``sim``: the same architectures sized for the simulated cell, trained on two CPU cores.
- ``tiny``: the same architectures with small dimensions and random weights, for tests (a
  full predict in well under a second on two CPU cores).

Where the paper is silent, the choices are written next to the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rotvla_common.action_space import CAMERA_NAMES, DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import DEFAULT_FPS

T = TypeVar("T")

# What a checkpoint may ask for (RotVLAConfig.problems): beyond these a chunk takes seconds to
# make or spans more than a task step.
MAX_FLOW_STEPS = 100
MAX_ACTION_HORIZON = 256
MAX_LATENT_HORIZON = 64


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
    image_size: int = 224  # frames are fed at this size
    # The size its position embeddings were trained for (0: image_size); other sizes interpolate
    # them (a pretrained DINOv2's table is for 518 px, the LAM takes 224 px frames).
    position_image_size: int = 0


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
    # Not given by the paper. At 1.0 (and at 0.1) the anchor term outweighs the reconstruction
    # early on, and its cheapest solution is every latent the identity: the decoder learns to
    # copy the current frame and ignores the latent (measured on moving squares and on the
    # simulated cell's demonstrations; tests/test_lam.py, benchmarks/README.md). At 0.01 the
    # moving squares' latent carries their motion and the identity element still settles near I.
    identity_weight: float = 0.01
    # Fraction of the training triplets played backwards. A scripted demonstration's next motion
    # is largely decided by the scene (from the current frame's features a linear probe recovers
    # 60-88% of the arm's motion over the next 0.5 s, from the frame change 98%), so the decoder
    # can predict the next frame without the latent; played backwards half the time, the
    # direction is not in the current frame and only the latent can carry it.
    time_reversal_fraction: float = 0.5
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
    camera_names: tuple[str, ...] = CAMERA_NAMES
    image_size: int = 224  # paper appendix C
    # Latent plan: latent_horizon future transitions x num_latent_tokens tokens, each an
    # n x n rotation (n = latent_dim), as produced by the LAM.
    latent_dim: int = 16
    num_latent_tokens: int = 4
    latent_horizon: int = 4
    # False: robot actions alone, no plan tokens (the paper's "w/o. Planner" ablation); Stage
    # III then needs no LAM.
    latent_planner: bool = True
    # Robot actions (Stage III): horizon x len(action_names), one step every dt seconds (the
    # training dataset's 1 / fps: the contract, rotvla_common.contract).
    action_names: tuple[str, ...] = DUAL_ARM_EEF_ACTION_NAMES
    action_horizon: int = 30
    dt: float = 1.0 / DEFAULT_FPS
    # The robot's own state (the contract's EEF state, in the action layout) as one more
    # prefix token that the plan and the actions attend to. The paper is silent; most
    # deployed VLAs (pi0, GR00T) feed it.
    use_state: bool = False
    # "stage2": denoise latent-action chunks only; "stage3": latent plan + robot actions.
    mode: str = "stage3"

    @property
    def plan_tokens(self) -> int:
        return self.latent_horizon * self.num_latent_tokens if self.latent_planner else 0

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def problems(self) -> list[str]:
        """What makes this configuration unable to produce a usable chunk (empty: nothing)."""
        found = []

        def need(condition: bool, text: str) -> None:
            if not condition:
                found.append(text)

        def heads(name: str, dim: int, count: int) -> None:
            need(
                dim > 0 and count > 0 and dim % count == 0,
                f"{name}: width {dim} is not a positive multiple of {count} heads",
            )

        v, t, e = self.vlm.vision, self.vlm.text, self.expert
        heads("vlm.vision", v.hidden_size, v.num_attention_heads)
        need(
            t.num_attention_heads > 0
            and t.num_key_value_heads > 0
            and t.num_attention_heads % t.num_key_value_heads == 0,
            f"vlm.text: {t.num_attention_heads} heads do not share {t.num_key_value_heads} key/value heads",
        )
        need(t.head_dim > 0 and t.hidden_size > 0 and t.vocab_size > 0, "vlm.text: non-positive dimensions")
        need(
            v.patch_size > 0 and self.image_size >= v.patch_size,
            f"image_size {self.image_size} below one patch ({v.patch_size})",
        )
        if v.patch_size > 0:
            grid = self.image_size // v.patch_size * self.vlm.downsample_ratio
            need(
                grid >= 1 and float(grid).is_integer(),
                f"image_size {self.image_size}: {self.image_size // max(v.patch_size, 1)} "
                f"patches a side do not pixel-shuffle by {self.vlm.downsample_ratio}",
            )
        heads("expert", e.dim, e.num_heads)
        need(e.num_layers >= 1 and e.mlp_ratio > 0, "expert: no layers or no MLP")
        need(self.action_horizon >= 1 and self.action_dim >= 1, "no robot actions (horizon or layout empty)")
        # Beyond these a chunk takes seconds to make or covers more than any task step: a
        # configuration that is not one of ours (the paper: 10 flow steps, 30-step chunks).
        need(self.action_horizon <= MAX_ACTION_HORIZON, f"action_horizon {self.action_horizon} > {MAX_ACTION_HORIZON}")
        need(self.latent_horizon <= MAX_LATENT_HORIZON, f"latent_horizon {self.latent_horizon} > {MAX_LATENT_HORIZON}")
        need(len(set(self.action_names)) == len(self.action_names), "action names repeat")
        need(
            bool(self.camera_names) and len(set(self.camera_names)) == len(self.camera_names),
            "cameras empty or repeated",
        )
        need(0.0 < self.dt <= 1.0, f"step period dt {self.dt} s outside (0, 1]")
        need(
            self.latent_dim >= 2 and self.num_latent_tokens >= 1 and self.latent_horizon >= 1,
            "latent plan dimensions must be positive (latent_dim >= 2)",
        )
        need(
            1 <= self.flow.num_steps <= MAX_FLOW_STEPS and 0.0 < self.flow.t_min < 1.0,
            f"flow: steps outside [1, {MAX_FLOW_STEPS}] or t_min outside (0, 1)",
        )
        need(self.vlm.max_instruction_tokens >= 1, "max_instruction_tokens < 1")
        return found


def tiny_lam_config() -> LAMConfig:
    return LAMConfig(
        dino=DinoConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56
        ),
        dim=64,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        latent_dim=4,
        num_latent_tokens=2,
        quantizer=SoftVQConfig(codebook_size=32),
    )


def tiny_config() -> RotVLAConfig:
    """Tests and the random-weight checkpoint: the smallest model of the architecture. Its 84 px
    input is the simulated stack's (config/sim.yaml image_size), so that it serves there too."""
    return RotVLAConfig(
        preset="tiny",
        vlm=VLMConfig(
            vision=VisionConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=84
            ),
            text=TextConfig(
                vocab_size=260,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                intermediate_size=128,
            ),
            max_instruction_tokens=32,
        ),
        expert=ActionExpertConfig(dim=64, num_layers=2, num_heads=4),
        image_size=84,
        latent_dim=4,
        num_latent_tokens=2,
        latent_horizon=2,
        action_horizon=8,
    )


def sim_lam_config() -> LAMConfig:
    """The LAM for ``sim``: DINOv2-style ViT-S/14-shaped but 4 layers at 112 px (frozen, as in
    the paper; without real DINOv2 weights here it is a fixed random feature map), a 2+2-layer
    encoder/decoder at width 128, two 8 x 8 rotations per transition."""
    return LAMConfig(
        dino=DinoConfig(
            hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=112
        ),
        dim=128,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        latent_dim=8,
        num_latent_tokens=2,
        quantizer=SoftVQConfig(codebook_size=64),
    )


def sim_config() -> RotVLAConfig:
    """The simulation-sized RotVLA: the paper's architecture (InternViT, Qwen3 LM, DiT expert
    with the latent planner) small enough to train to success on two CPU cores in about an
    hour (benchmarks/README.md), for the simulated cell.

    - 84 px images (6 x 6 patches of 14, 3 x 3 tokens per view after the pixel shuffle): the
      head camera sees the work area at about 1.2 cm per pixel, the wrist cameras the grasp
      much closer; a training step at 112 px cost twice as much for nothing the tasks need.
    - InternViT 192 wide x 4 layers, Qwen3 256 wide x 2 layers (byte tokenizer), DiT 256 wide x
      4 layers: ~9 M parameters, ~0.35 s per training step of 32 on two cores with two views
      (a single-arm task needs the head and its own wrist: ``TrainConfig.cameras``). Two more
      language layers cost a quarter more per step for an instruction that does not change
      within a task.
    - 16 steps of 0.1 s (1.6 s) per chunk: the length of one reach of the experts.
    - The robot state as input (``use_state``): the arm's pose and gripper disambiguate the
      moments the images alone do not (the gripper closing on a block it already surrounds).
      Not settled: at 2,000 steps on block_to_plate the same run without it did better (46%
      against 28%, p = 0.10; benchmarks/README.md); the shipped 8,000-step run used it (86%).
    - The latent plan: 2 transitions x 2 tokens of SO(8), from ``sim_lam_config``.
    """
    return RotVLAConfig(
        preset="sim",
        vlm=VLMConfig(
            vision=VisionConfig(
                hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=84
            ),
            text=TextConfig(
                vocab_size=260,
                hidden_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=64,
                intermediate_size=768,
            ),
            max_instruction_tokens=48,
        ),
        expert=ActionExpertConfig(dim=256, num_layers=4, num_heads=4),
        image_size=84,
        latent_dim=8,
        num_latent_tokens=2,
        latent_horizon=2,
        action_horizon=16,
        use_state=True,
    )


PRESETS = {"rotvla-1.7b": RotVLAConfig, "sim": sim_config, "tiny": tiny_config}
LAM_PRESETS = {"rotvla-1.7b": LAMConfig, "sim": sim_lam_config, "tiny": tiny_lam_config}


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
        default = (
            known[name].default_factory()
            if known[name].default_factory is not dataclasses.MISSING
            else known[name].default
        )
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, tuple) or "tuple" in str(hints[name]):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
