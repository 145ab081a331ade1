"""A loaded RotVLA checkpoint as a callable: observation dict in, action chunk out.

The model (``rotvla_ros.model``) is tensors in, tensors out; the policy owns what lies
around it, as openpi separates them: image pre-processing, tokenisation, normalisation
statistics, post-processing of the robot actions (Rotate6D re-orthonormalised), device and
dtype, timing, warm-up, and checkpoint I/O. It imports no rclpy: the policy node wraps it.

An observation is ``{"images": {camera: (H, W, 3) uint8 RGB}, "instruction": str}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import RotVLAConfig
from ..model.rotvla import RotVLA
from ..model.so_n import matrix_to_rot6d, rot6d_to_matrix
from .checkpoint import CheckpointError, checkpoint_id, load_checkpoint, save_checkpoint
from .normalization import ActionNormalizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ObservationError(ValueError):
    """An observation the policy cannot use (missing camera, wrong image format)."""


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or inf: nothing of this inference may reach the robot."""


@dataclass
class PolicyOutput:
    actions: np.ndarray  # (H, D) float32, un-normalised, in the layout of action_names
    plan: np.ndarray  # (K, n, n) float32, the latent plan: rotations in SO(n)
    action_names: tuple[str, ...]
    dt: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def rot6d_slices(action_names: tuple[str, ...]) -> list[slice]:
    """Where each arm's Rotate6D (r11 r21 r31 r12 r22 r32) sits in the action vector."""
    slices = []
    for i, name in enumerate(action_names):
        if name.endswith("/r11"):
            prefix = name[: -len("r11")]
            expected = [prefix + s for s in ("r11", "r21", "r31", "r12", "r22", "r32")]
            if list(action_names[i : i + 6]) != expected:
                raise ValueError(f"Rotate6D dimensions of {prefix[:-1]} must follow each other in order {expected}")
            slices.append(slice(i, i + 6))
    return slices


class RotVLAPolicy:
    def __init__(
        self,
        model: RotVLA,
        normalizer: ActionNormalizer,
        device: str | None = None,
        dtype: str | None = None,
        checkpoint: str = "",
    ):
        self.config: RotVLAConfig = model.config
        if normalizer.names != tuple(self.config.action_names):
            raise ValueError("normaliser and model disagree on the action names")
        self.device = torch.device(device or default_device())
        dtype = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (one of {sorted(DTYPES)})")
        self.dtype = DTYPES[dtype]
        self.model = model.to(self.device, self.dtype).eval()
        self.normalizer = normalizer
        self.checkpoint_id = checkpoint
        self._rot6d = rot6d_slices(self.config.action_names)

    # -- construction and I/O -------------------------------------------------------------

    @classmethod
    def from_config(cls, config: RotVLAConfig, normalizer: ActionNormalizer | None = None, **kwargs) -> "RotVLAPolicy":
        """A randomly initialised policy (tests, benchmarks, the start of training)."""
        return cls(RotVLA(config), normalizer or ActionNormalizer.identity(config.action_names), **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        expected_action_names: tuple[str, ...] | None = None,
    ) -> "RotVLAPolicy":
        """Load a checkpoint directory; raises ``CheckpointError`` with the reason."""
        model, normalizer = load_checkpoint(Path(path), expected_action_names)
        try:
            return cls(model, normalizer, device=device, dtype=dtype, checkpoint=checkpoint_id(Path(path)))
        except (ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: {error}") from error

    def save_pretrained(self, path: str | Path) -> str:
        """Write the checkpoint directory (weights in the policy's current dtype); returns its id."""
        save_checkpoint(self.model, self.normalizer, Path(path))
        return checkpoint_id(Path(path))

    # -- inference ------------------------------------------------------------------------

    def preprocess(self, observation: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> images (1, V, 3, S, S) in [0, 1], token ids and mask (1, L)."""
        images = observation.get("images")
        if not isinstance(images, dict):
            raise ObservationError("observation['images'] must be a dict camera -> (H, W, 3) uint8 image")
        views = []
        size = self.config.image_size
        for camera in self.config.camera_names:
            if camera not in images:
                raise ObservationError(f"observation has no image from camera {camera!r} (has {sorted(images)})")
            image = np.asarray(images[camera])
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ObservationError(f"camera {camera!r}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            view = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
            if view.shape[-2:] != (size, size):
                view = F.interpolate(view, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            views.append(view[0])
        pixels = torch.stack(views)[None].to(self.dtype)  # (1, V, 3, S, S)
        ids, mask = self.model.backbone.tokenize([str(observation.get("instruction", ""))])
        return pixels, ids.to(self.device), mask.to(self.device)

    def postprocess(self, normalised: torch.Tensor) -> np.ndarray:
        """(H, D) normalised -> un-normalised actions with every Rotate6D a rotation again."""
        actions = torch.from_numpy(self.normalizer.unnormalize(normalised.float().cpu().numpy()))
        for s in self._rot6d:
            actions[:, s] = matrix_to_rot6d(rot6d_to_matrix(actions[:, s]))
        return actions.numpy()

    @torch.inference_mode()
    def predict(self, observation: dict, seed: int | None = None) -> PolicyOutput:
        """One action chunk. ``seed`` makes the sampled noise (and so the chunk) reproducible."""
        timings: dict[str, float] = {}
        start = mark = self._now()

        def lap(stage: str) -> None:
            nonlocal mark
            now = self._now()
            timings[stage] = now - mark
            mark = now

        pixels, ids, mask = self.preprocess(observation)
        lap("preprocess")
        cache = self.model.encode_prefix(pixels, ids, mask)
        lap("vl_prefix")
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        noise = [n.to(self.dtype) for n in self.model.initial_noise(1, self.device, generator)]
        denoise_start = mark
        plan, actions = self.model.sample(cache, noise, on_step=lambda i: lap(f"denoise_step_{i}"))
        timings["denoise"] = mark - denoise_start
        if actions is None:
            raise RuntimeError("a stage2 (latent-only) checkpoint predicts no robot actions")
        if not (torch.isfinite(actions).all() and torch.isfinite(plan).all()):
            raise NonFiniteOutputError(f"checkpoint {self.checkpoint_id or '<unsaved>'} produced NaN/inf")
        result = PolicyOutput(
            actions=self.postprocess(actions[0]),
            plan=plan[0].float().cpu().numpy(),
            action_names=tuple(self.config.action_names),
            dt=self.config.dt,
        )
        lap("postprocess")
        timings["total"] = mark - start
        result.timings = timings
        return result

    def dummy_observation(self, instruction: str = "warm up") -> dict:
        size = self.config.image_size
        rng = np.random.default_rng(0)
        images = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in self.config.camera_names}
        return {"images": images, "instruction": instruction}

    def warmup(self, passes: int = 2) -> float:
        """Run ``passes`` predictions on a synthetic observation (kernels, allocator, caches);
        raises ``NonFiniteOutputError`` if the output is not finite. Returns seconds spent."""
        start = time.perf_counter()
        for i in range(passes):
            self.warmup_pass(i)
        return time.perf_counter() - start

    def warmup_pass(self, index: int = 0) -> None:
        """One warm-up prediction (see ``warmup``); for callers that interleave them."""
        self.predict(self.dummy_observation(), seed=index)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
