"""A loaded RotVLA checkpoint as a callable: observation dict in, action chunk out.

The model (``rotvla_ros.model``) is tensors in, tensors out; the policy owns what lies
around it, as openpi separates them: image pre-processing, tokenisation, normalisation
statistics, post-processing of the robot actions (Rotate6D re-orthonormalised), device and
dtype, timing, warm-up, and checkpoint I/O. It imports no rclpy: the policy node wraps it.

An observation is ``{"images": {camera: (H, W, 3) uint8 RGB}, "instruction": str}``, plus
``"state"`` ((A,) in the action layout: ``rotvla_common.contract.eef_state`` per arm) for a
checkpoint that takes the robot state. Images of any size pass the contract's
``prepare_image``, as in training; one already at the model's size passes unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rotvla_common.action_space import ROT6D_FIELDS
from rotvla_common.contract import Contract, prepare_image

from ..model.config import RotVLAConfig
from ..model.fast_sampling import MODES as INFERENCE_MODES
from ..model.fast_sampling import ChunkSampler
from ..model.rotvla import RotVLA
from ..model.so_n import matrix_to_rot6d, rot6d_to_matrix
from .checkpoint import (
    CheckpointError,
    checkpoint_id,
    load_checkpoint,
    read_config,
    read_instructions,
    save_checkpoint,
)
from .normalization import ActionNormalizer
from .registry import DEFAULT_TYPE, register_policy

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports
    it, or a CPU with AMX or AVX512-BF16 (elsewhere bfloat16 is emulated and slower than
    float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        ).split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


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


def default_inference_mode(device: torch.device) -> str:
    """A CUDA graph of the denoising loop on GPUs; the plain reference path on CPUs (where
    launches cost little and compiling costs the node's start tens of seconds)."""
    return "graph" if device.type == "cuda" else "eager"


def usable_device(name: str) -> torch.device:
    """``name`` as a torch device that exists on this machine; ValueError otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name!r} is no torch device ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch has no usable CUDA (CPU build or no GPU)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type not in ("cpu", "mps") or (device.type == "mps" and not torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} is not available here")
    return device


def rot6d_slices(action_names: tuple[str, ...]) -> list[slice]:
    """Where each arm's Rotate6D (r11 r21 r31 r12 r22 r32) sits in the action vector."""
    slices = []
    for i, name in enumerate(action_names):
        if name.endswith("/" + ROT6D_FIELDS[0]):
            prefix = name[: -len(ROT6D_FIELDS[0])]
            expected = [prefix + s for s in ROT6D_FIELDS]
            if list(action_names[i : i + 6]) != expected:
                raise ValueError(f"Rotate6D dimensions of {prefix[:-1]} must follow each other in order {expected}")
            slices.append(slice(i, i + 6))
    return slices


class StageTimer:
    """Seconds spent in each stage of one prediction. On a GPU, CUDA events recorded in the
    stream and read once at the end: timing costs no host synchronisation per stage (the chunk
    waits for the device once, when its results come back). On a CPU, the wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = [("start", self._stamp())]

    def _stamp(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        self.marks.append((stage, self._stamp()))

    def timings(self) -> dict[str, float]:
        """Every stage, ``denoise`` (all its steps) and ``total``, in seconds."""
        if self.cuda:
            self.marks[-1][1].synchronize()
        elapsed = (lambda a, b: a.elapsed_time(b) / 1e3) if self.cuda else (lambda a, b: b - a)
        timings = {name: elapsed(a, b) for (_, a), (name, b) in zip(self.marks, self.marks[1:])}
        steps = [v for k, v in timings.items() if k.startswith("denoise_step_")]
        if steps:  # the fast path times its denoising as one stage
            timings["denoise"] = sum(steps)
        timings["total"] = elapsed(self.marks[0][1], self.marks[-1][1])
        return timings


@register_policy(DEFAULT_TYPE)
class RotVLAPolicy:
    def __init__(
        self,
        model: RotVLA,
        normalizer: ActionNormalizer,
        device: str | None = None,
        dtype: str | None = None,
        checkpoint: str = "",
        state_normalizer: ActionNormalizer | None = None,
        inference_mode: str | None = None,
        instructions: tuple[str, ...] = (),
    ):
        """``inference_mode``: ``eager`` (the reference path, a timing per denoising step),
        ``graph`` (CUDA: the denoising loop replayed as one CUDA graph) or ``compile``
        (torch.compile of the whole chunk); see ``rotvla_ros.model.fast_sampling``. Default: graph
        on CUDA, eager elsewhere."""
        self.config: RotVLAConfig = model.config
        if normalizer.names != tuple(self.config.action_names):
            raise ValueError("normaliser and model disagree on the action names")
        if self.config.use_state and state_normalizer is None:
            raise ValueError("the model takes the robot state: state statistics are needed")
        self.device = usable_device(device or default_device())
        dtype = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (one of {sorted(DTYPES)})")
        self.dtype = DTYPES[dtype]
        self.model = model.to(self.device, self.dtype).eval()
        self.normalizer = normalizer
        self.state_normalizer = state_normalizer if self.config.use_state else None
        self.checkpoint_id = checkpoint
        # What it was trained on (empty: not recorded): an instruction outside it is a task
        # the checkpoint has never seen.
        self.instructions: tuple[str, ...] = tuple(instructions)
        self._rot6d = rot6d_slices(self.config.action_names)
        self.inference_mode = inference_mode or default_inference_mode(self.device)
        if self.inference_mode not in INFERENCE_MODES:
            raise ValueError(f"unknown inference mode {self.inference_mode!r} (one of {INFERENCE_MODES})")
        self.sampler: ChunkSampler | None = None
        if self.inference_mode != "eager":
            # Static shapes: the instruction is padded to its longest (masked, so the same chunk).
            self.sampler = ChunkSampler(self.model, self.config.vlm.max_instruction_tokens, self.inference_mode)

    # -- construction and I/O -------------------------------------------------------------

    @classmethod
    def from_config(cls, config: RotVLAConfig, normalizer: ActionNormalizer | None = None, **kwargs) -> RotVLAPolicy:
        """A randomly initialised policy (tests, benchmarks, the start of training)."""
        identity = ActionNormalizer.identity(config.action_names)
        kwargs.setdefault("state_normalizer", identity if config.use_state else None)
        return cls(RotVLA(config), normalizer or identity, **kwargs)

    @property
    def contract(self) -> Contract:
        """What this checkpoint was trained for (rotvla_common.contract)."""
        c = self.config
        return Contract(c.dt, c.image_size, tuple(c.camera_names), tuple(c.action_names))

    @classmethod
    def read_contract(cls, path: str | Path) -> Contract:
        c = read_config(Path(path))
        return Contract(c.dt, c.image_size, tuple(c.camera_names), tuple(c.action_names))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        expected_action_names: tuple[str, ...] | None = None,
        inference_mode: str | None = None,
    ) -> RotVLAPolicy:
        """Load a checkpoint directory; raises ``CheckpointError`` with the reason."""
        model, normalizer, state_normalizer = load_checkpoint(Path(path), expected_action_names)
        try:
            return cls(
                model,
                normalizer,
                device=device,
                dtype=dtype,
                checkpoint=checkpoint_id(Path(path)),
                state_normalizer=state_normalizer,
                inference_mode=inference_mode,
                instructions=read_instructions(Path(path)),
            )
        except (ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: {error}") from error

    def save_pretrained(self, path: str | Path) -> str:
        """Write the checkpoint directory (weights in the policy's current dtype); returns its id."""
        save_checkpoint(self.model, self.normalizer, Path(path), self.state_normalizer, self.instructions)
        return checkpoint_id(Path(path))

    # -- inference ------------------------------------------------------------------------

    def preprocess(self, observation: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> images (1, V, 3, S, S) in [0, 1], token ids and mask (1, L), normalised state
        (1, A) or None."""
        images = observation.get("images")
        if not isinstance(images, dict):
            raise ObservationError("observation['images'] must be a dict camera -> (H, W, 3) uint8 image")
        views = []
        for camera in self.config.camera_names:
            if camera not in images:
                raise ObservationError(f"observation has no image from camera {camera!r} (has {sorted(images)})")
            image = np.asarray(images[camera])
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
                raise ObservationError(
                    f"camera {camera!r}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
                )
            # Contiguous: a bgr8 image arrives as a view with negative strides.
            views.append(np.ascontiguousarray(prepare_image(image, self.config.image_size)))
        pixels = torch.from_numpy(np.stack(views)).to(self.device).permute(0, 3, 1, 2)[None]  # (1, V, 3, S, S)
        pixels = (pixels.float() / 255.0).to(self.dtype)
        ids, mask = self.model.backbone.tokenize(
            [str(observation.get("instruction", ""))], pad_to_limit=self.sampler is not None
        )
        state = None
        if self.state_normalizer is not None:
            raw = np.asarray(observation.get("state", ()), dtype=np.float64)
            if raw.shape != (self.config.action_dim,) or not np.isfinite(raw).all():
                raise ObservationError(
                    f"this checkpoint takes the robot state: {self.config.action_dim} finite numbers "
                    f"in the action layout, got {raw.shape}"
                )
            state = torch.from_numpy(self.state_normalizer.normalize(raw)).to(self.device)[None]  # (1, A)
        return pixels, ids.to(self.device), mask.to(self.device), state

    def postprocess(self, normalised: torch.Tensor) -> np.ndarray:
        """(H, D) normalised -> un-normalised actions with every Rotate6D a rotation again."""
        actions = torch.from_numpy(self.normalizer.unnormalize(normalised.float().cpu().numpy()))
        for s in self._rot6d:
            actions[:, s] = matrix_to_rot6d(rot6d_to_matrix(actions[:, s]))
        return actions.numpy()

    @torch.inference_mode()
    def predict(self, observation: dict, seed: int | None = None) -> PolicyOutput:
        """One action chunk. ``seed`` makes the sampled noise (and so the chunk) reproducible."""
        timer = StageTimer(self.device)
        pixels, ids, mask, state = self.preprocess(observation)
        timer.lap("preprocess")
        if not self.model.with_actions:
            raise RuntimeError("a stage2 (latent-only) checkpoint predicts no robot actions")
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        noise = self.model.initial_noise(1, self.device, generator)  # float32: see euler_sample
        if self.sampler is not None:
            self.prepare()  # a no-op once prepared (at load, or by the warm-up's first pass)
            plan, actions = self.sampler(pixels, ids, mask, state, noise, on_prefix=lambda: timer.lap("vl_prefix"))
            timer.lap("denoise")  # compile: the prefix is inside this one stage
        else:
            prefix, prefix_mask = self.model.prefix_features(pixels, ids, mask, state)  # (1, N, C), (1, N)
            timer.lap("vl_prefix")
            cache = self.model.expert.prefix_cache(prefix, prefix_mask)
            plan, actions = self.model.denoise(cache, noise, on_step=lambda i: timer.lap(f"denoise_step_{i}"))
        # The chunk's one wait for the device: both results come to the host together. The
        # plan's projection onto SO(n) (an SVD of a few 4x4s) is done there, off the device.
        actions, plan = (x[0].float().cpu() for x in (actions, plan))  # (H, A), (K, n*n)
        plan = self.model.project_plan(plan[None])[0]  # (K, n, n)
        if not (torch.isfinite(actions).all() and torch.isfinite(plan).all()):
            raise NonFiniteOutputError(f"checkpoint {self.checkpoint_id or '<unsaved>'} produced NaN/inf")
        result = PolicyOutput(
            actions=self.postprocess(actions),
            plan=plan.numpy(),
            action_names=tuple(self.config.action_names),
            dt=self.config.dt,
        )
        timer.lap("postprocess")
        result.timings = timer.timings()
        return result

    def dummy_observation(self, instruction: str = "warm up") -> dict:
        size = self.config.image_size
        rng = np.random.default_rng(0)
        images = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in self.config.camera_names}
        observation = {"images": images, "instruction": instruction}
        if self.state_normalizer is not None:
            observation["state"] = self.state_normalizer.mean.copy()
        return observation

    def prepare(self) -> float:
        """Capture or compile the fast path (``inference_mode``), once; seconds spent. The
        policy node calls it on its loader thread, so that a swap never stalls serving for it."""
        if self.sampler is None or self.sampler.ready:
            return 0.0
        start = time.perf_counter()
        self.sampler.prepare()
        return time.perf_counter() - start

    @property
    def uses_state(self) -> bool:
        return bool(self.config.use_state)

    def fast_path(self) -> str:
        """What ``prepare`` built, for a log line ("" for nothing)."""
        if self.sampler is None:
            return ""
        return f"its {self.inference_mode} path {'compiled' if self.inference_mode == 'compile' else 'captured'}"

    def warmup(self, passes: int = 2) -> float:
        """``prepare``, then run ``passes`` predictions on a synthetic observation (kernels, allocator, caches);
        raises ``NonFiniteOutputError`` if the output is not finite. Returns seconds spent."""
        start = time.perf_counter()
        self.prepare()
        for i in range(passes):
            self.warmup_pass(i)
        return time.perf_counter() - start

    def warmup_pass(self, index: int = 0) -> None:
        """One warm-up prediction (see ``warmup``); for callers that interleave them."""
        self.predict(self.dummy_observation(), seed=index)
