"""One training loop for the three stages: data from a LeRobot v3 dataset, AdamW with the
stage's schedule, gradient clipping, bf16 autocast where the device multiplies bf16 natively,
optionally torch.compile, DistributedDataParallel when started by ``torchrun`` (one process
per GPU), and a resumable run directory:

    <output>/last/            the latest checkpoint, in the policy's directory format (stage
                              I: the LAM's), plus train_state.pt (step, optimiser, scheduler,
                              RNG states): ``--resume`` continues from it exactly
    <output>/step-<N>/        every ``save_every`` steps
    <output>/log.jsonl        one line of losses per ``log_every`` steps

The order of the training samples is a function of (seed, step), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import shutil
import time
from copy import deepcopy as copy_module
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..data.lerobot_dataset import LeRobotV3Dataset
from ..data.mixture import DatasetMixture, parse_sources
from ..model.config import LAM_PRESETS, PRESETS, RotVLAConfig
from ..model.flow_matching import FlowNoise, sample_time
from ..model.lam import LatentActionModel, pretrained_dino_config
from ..model.rotvla import RotVLA
from ..policy.checkpoint import checkpoint_id, load_lam, save_lam
from ..policy.normalization import ActionNormalizer
from ..policy.policy import RotVLAPolicy, native_bfloat16
from .config import TrainConfig
from .latent_labels import latent_labels, plan_rows

TRAIN_STATE = "train_state.pt"


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


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


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
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


def _ema_update(decay: float):
    """AveragedModel's multi_avg_fn for an EMA whose decay ramps up to ``decay``."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        rate = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - rate)

    return update


class StepBatchSampler(torch.utils.data.Sampler):
    """One rank's share of each step's batch: a pure function of (seed, step), so that a run
    resumed at step N draws exactly the batches an uninterrupted one would, on any number of
    processes. The samples form one stream; step s's (global) batch is its positions
    [s B, (s + 1) B), and rank r of W takes B / W consecutive ones.

    Each source (a dataset of a mixture; ``rows`` one array of indices per source) has a
    stream of its own: seeded permutations of its rows, epoch after epoch. With several, the
    positions of the common stream are dealt to the sources in cycles of ``MIXTURE_CYCLE``,
    each source's share of a cycle its weight's (largest remainders), in a seeded order per
    cycle: a source's k-th sample is the k-th of its stream, whatever the world size."""

    MIXTURE_CYCLE = 1000

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world: int = 1,
        rows: np.ndarray | list[np.ndarray] | None = None,
        weights: list[float] | None = None,
    ):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} does not split over {world} processes")
        if rows is None:
            rows = [np.arange(size)]
        elif not isinstance(rows, (list, tuple)):
            rows = [rows]
        self.rows = [np.asarray(r) for r in rows]  # the rows drawn from, per source
        if any(len(r) == 0 for r in self.rows):
            raise ValueError("no rows to train on" + (" in a source" if len(self.rows) > 1 else ""))
        weights = np.asarray(weights if weights is not None else [1.0] * len(self.rows), dtype=np.float64)
        if len(weights) != len(self.rows) or not (weights > 0).all():
            raise ValueError(f"one weight > 0 per source, not {weights.tolist()}")
        self.counts = _largest_remainders(weights / weights.sum(), self.MIXTURE_CYCLE)  # per cycle
        self.batch_size, self.share, self.seed = batch_size, batch_size // world, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}
        self._cycle, self._deal, self._rank_in_source = -1, None, None

    def _source_row(self, source: int, position: int) -> int:
        """The row at ``position`` of source ``source``'s stream."""
        rows = self.rows[source]
        epoch, offset = divmod(position, len(rows))
        if self._epochs.get(source, (None,))[0] != epoch:
            # Source 0 is seeded as a lone dataset is: a run of one dataset draws the same
            # batches whether or not it is declared as a mixture.
            key = [self.seed, epoch] if source == 0 else [self.seed, epoch, source]
            self._epochs[source] = (epoch, np.random.default_rng(key).permutation(len(rows)))
        return int(rows[self._epochs[source][1][offset]])

    def _row(self, position: int) -> int:
        if len(self.rows) == 1:
            return self._source_row(0, position)
        cycle, offset = divmod(position, self.MIXTURE_CYCLE)
        if cycle != self._cycle:
            deal = np.repeat(np.arange(len(self.rows)), self.counts)
            deal = np.random.default_rng([self.seed, cycle, 1_000_003]).permutation(deal)
            rank_in_source = np.zeros(len(deal), dtype=np.int64)
            for source in range(len(self.rows)):
                where = deal == source
                rank_in_source[where] = np.arange(int(where.sum()))
            self._cycle, self._deal, self._rank_in_source = cycle, deal, rank_in_source
        source = int(self._deal[offset])
        return self._source_row(source, cycle * int(self.counts[source]) + int(self._rank_in_source[offset]))

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = step * self.batch_size + self.rank * self.share
            yield [self._row(first + k) for k in range(self.share)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _largest_remainders(shares: np.ndarray, total: int) -> np.ndarray:
    """Whole counts summing to ``total`` in proportion to ``shares`` (each at least 1)."""
    exact = shares * total
    counts = np.maximum(np.floor(exact).astype(np.int64), 1)
    while counts.sum() < total:
        counts[int(np.argmax(exact - counts))] += 1
    while counts.sum() > total:
        counts[int(np.argmax(np.where(counts > 1, counts - exact, -np.inf)))] -= 1
    return counts


def training_rows(
    dataset: LeRobotV3Dataset, only_successful: bool, intervention_weight: int = 1, policy_frames: bool = True
) -> np.ndarray:
    """The dataset rows a run learns from: with ``only_successful``, those of the episodes not
    marked failed (``success`` false in the episodes table; episodes without the flag count);
    without ``policy_frames``, not the frames the policy drove; each intervention frame
    ``intervention_weight`` times (0: left out)."""
    rows = np.arange(len(dataset))
    if only_successful:
        failed = [e for e, row in dataset.episodes.items() if row.get("success") is False]
        rows = rows[~np.isin(dataset.episode_index, failed)]
    if not policy_frames:
        rows = rows[~dataset.policy_driven[rows]]
    if intervention_weight != 1:
        rows = np.repeat(rows, np.where(dataset.intervention[rows], intervention_weight, 1))
    return rows


def source_weights(sources, rows: list[np.ndarray], pooled: bool) -> list[float]:
    """Each source's share of the draws: its mixture weight, or, ``pooled``, the rows it gives
    (the sources drawn as one aggregate dataset)."""
    return [float(len(r)) for r in rows] if pooled else [s.weight for s in sources]


class LossModule(torch.nn.Module):
    """The model's training loss as its forward: what DistributedDataParallel wraps, so that
    the loss runs through DDP's forward (which arranges the gradient all-reduce)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return self.model.loss(*args, **kwargs)


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False):  # noqa: C901 - split by stage: issue 32 item 3
        self.config = config
        self.rank, self.world, local_rank = _distributed()
        if config.device == "auto":
            self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(config.device)
        self.autocast = config.precision == "bf16" or (config.precision == "auto" and native_bfloat16(self.device))
        self.output = Path(config.output)
        torch.manual_seed(config.seed + self.rank)
        self.stage = config.stage
        self.lam: LatentActionModel | None = None
        self.labels: list[np.ndarray] | None = None  # per source: (N_d, q, n, n)
        self.sources = parse_sources(config.dataset)
        model_config = PRESETS[config.preset]()
        initial_instructions: tuple[str, ...] = ()  # those of --init-checkpoint
        if self.stage == "stage1":
            lam_config = LAM_PRESETS[config.preset]()
            if config.dino_path:
                lam_config.dino = pretrained_dino_config(config.dino_path, lam_config.dino.image_size)
            self.model = LatentActionModel(lam_config)
            self.dataset = DatasetMixture(
                self.sources,
                latent_camera=config.latent_camera,
                clip_length=3,
                clip_stride=config.frame_stride,
                clip_image_size=self.model.config.dino.image_size,
                video_cache_mb=config.video_cache_mb,
            )  # triplets
        else:
            source = None
            if config.init_checkpoint:
                if config.vlm_path:
                    raise ValueError("vlm_path is for a run from scratch: --init-checkpoint brings its own backbone")
                # Stage III continues the Stage II model: its architecture, backbone and tokenizer.
                initial = RotVLAPolicy.from_pretrained(config.init_checkpoint, device="cpu", dtype="float32")
                source, initial_instructions = initial.model, initial.instructions
                model_config = source.config
            elif config.vlm_path:
                model_config = dataclasses.replace(
                    model_config, vlm=dataclasses.replace(model_config.vlm, pretrained_path=config.vlm_path)
                )
            # The data is read before the model is built: its layout and rate bind the model.
            self.dataset = DatasetMixture(
                self.sources,
                views=tuple(config.cameras) if config.cameras else tuple(model_config.camera_names),
                action_names=model_config.action_names,
                latent_camera=config.latent_camera,
                action_horizon=model_config.action_horizon,
                image_size=model_config.image_size,
                video_cache_mb=config.video_cache_mb,
            )
            model_config = self._model_config(model_config)
            if model_config.plan_tokens:
                if not config.lam_checkpoint:
                    raise ValueError(
                        f"{self.stage} with the latent planner needs the frozen Stage I LAM: --lam-checkpoint"
                    )
                self.lam = load_lam(Path(config.lam_checkpoint)).to(self.device).eval()
                for p in self.lam.parameters():
                    p.requires_grad_(False)
                if (self.lam.config.latent_dim, self.lam.config.num_latent_tokens) != (
                    model_config.latent_dim,
                    model_config.num_latent_tokens,
                ):
                    raise ValueError(
                        "the LAM's latent space does not match the model's (latent_dim, num_latent_tokens)"
                    )
            if source is not None:
                backbone = source.backbone
                self.model = RotVLA(model_config, backbone.model.config, backbone.tokenizer)
                self._initialise_from(source, Path(config.init_checkpoint))
            else:
                self.model = RotVLA(model_config)
            if self.lam is not None:  # per source (N_d, q, n, n): every frame's latent action, cached on disk
                self.labels = self._latent_labels(local_rank)
        self.model_config = model_config
        if self.rank == 0:
            for line in self.dataset.describe(latent=self.stage == "stage1" or self.lam is not None):
                print(f"[{self.stage}] {line}", flush=True)
        if config.num_workers == 0 and self.dataset.preload():  # a small dataset: decoded once, in order
            print(f"[{self.stage}] {len(self.dataset)} frames decoded into memory", flush=True)
        # What a checkpoint of this run says it was trained on: the data's instructions, and
        # those of the checkpoint it started from.
        self.instructions = tuple(
            sorted({task for part in self.dataset.parts for task in part.tasks.values()} | set(initial_instructions))
        )
        # Per source, the global indices a run learns from.
        self.rows = [
            self.dataset.offsets[d]
            + training_rows(part, config.only_successful, config.intervention_weight, config.policy_frames)
            for d, part in enumerate(self.dataset.parts)
        ]
        left_out = len(self.dataset) - sum(len(np.unique(r)) for r in self.rows)
        if left_out:
            print(
                f"[{self.stage}] {left_out} frames left out (failed episodes, interventions at weight 0, "
                "the policy's own without policy_frames)",
                flush=True,
            )
        if config.pooled and self.rank == 0:  # the mixture weights printed above do not apply
            shares = source_weights(self.sources, self.rows, pooled=True)
            print(
                f"[{self.stage}] pooled: each source drawn by the rows it gives, "
                + ", ".join(f"{n:.0f} ({n / sum(shares):.0%})" for n in shares),
                flush=True,
            )
        interventions = sum(int(part.intervention.sum()) for part in self.dataset.parts)
        if interventions:
            print(
                f"[{self.stage}] {interventions} intervention frames, each drawn "
                f"{config.intervention_weight} times an epoch",
                flush=True,
            )
        self.normalizer = self.state_normalizer = None
        if self.stage != "stage1":
            self.normalizer, self.state_normalizer = self._normalizers(model_config)
        self.model.to(self.device).train()
        if config.activation_checkpointing and self.stage != "stage1":
            self.model.set_activation_checkpointing(True)
        share = config.batch_size // self.world
        if config.batch_size % self.world or (config.micro_batch_size and share % config.micro_batch_size):
            raise ValueError(
                f"batch_size {config.batch_size} over {self.world} processes in micro-batches of "
                f"{config.micro_batch_size or share}: each must divide the one before"
            )
        self.local_rank = local_rank
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr, weight_decay=config.weight_decay)
        # The VLM's parameters that learn once the X-VLA warm-up is over (frozen until then).
        self._vlm = [p for p in self.model.backbone.parameters() if p.requires_grad] if self.stage != "stage1" else []
        self._vlm_frozen: bool | None = None
        self.module: torch.nn.Module = self._loss_module()
        # The averaged weights are what a checkpoint holds; the decay ramps up from 0 as
        # (1 + n) / (10 + n), so that the first steps' random weights fade out quickly.
        self.ema = None
        if config.ema_decay > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=_ema_update(config.ema_decay), use_buffers=True
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.jitter = torch.Generator().manual_seed(config.seed + 1000 + self.rank)
        if resume and (self.output / "last" / TRAIN_STATE).exists():
            self._load_state(self.output / "last")
        self._freeze_vlm(self._in_warm_up())

    def _latent_labels(self, local_rank: int) -> list[np.ndarray]:
        """Each source's labels from the cache. Under torchrun the first process of each node
        computes what the cache lacks while the others wait, then they read it (a cache on a
        shared file system is written by one process per node, atomically)."""
        config = self.config
        computes = local_rank == 0
        if self.world > 1 and not computes:
            torch.distributed.barrier()
        labels = [
            latent_labels(
                part,
                self.lam,
                checkpoint_id(Path(config.lam_checkpoint)),
                camera,
                config.frame_stride,
                Path(config.latent_cache_dir) if config.latent_cache_dir else None,
                device=self.device,
            )
            for part, camera in zip(self.dataset.parts, self.dataset.latent_cameras)
        ]
        if self.world > 1 and computes:
            torch.distributed.barrier()
        return labels

    def _in_warm_up(self) -> bool:
        return self.stage != "stage1" and self.step < self.config.warmup_steps

    def _freeze_vlm(self, frozen: bool) -> None:
        """X-VLA: the VLM is frozen while the action expert warms up: no gradient, so no
        backward through it, nothing in the clipped norm or AdamW's moments. Under DDP the
        wrapper is rebuilt when this changes (it registers the parameters that learn)."""
        if frozen == self._vlm_frozen:
            return
        for p in self._vlm:
            p.requires_grad_(not frozen)
        self._vlm_frozen = frozen
        if self.world > 1:
            self.module = torch.nn.parallel.DistributedDataParallel(
                self._loss_module(),
                device_ids=[self.local_rank] if self.device.type == "cuda" else None,
                # Layers with no part in the loss: the expert's action layers in Stage II (the
                # plan alone), its (empty) plan layers in a Stage III without the planner.
                find_unused_parameters=self.stage == "stage2"
                or (self.stage == "stage3" and not self.model.config.plan_tokens),
            )

    def _loss_module(self) -> torch.nn.Module:
        module = LossModule(self.model)
        if not self.config.compile:
            return module
        # Inductor's CPU code adds scattered gradients (the token embedding's) with atomics, in
        # an order that varies between runs; a resumed run must retrace an uninterrupted one.
        torch.use_deterministic_algorithms(True, warn_only=True)
        return torch.compile(module)

    def _attention(self):
        """CPU bf16: attention by explicit products. PyTorch's fused CPU attention kernel is
        slow in bf16 backward (a quarter of a sim-preset step on the 2-core Xeon), while the
        products themselves run on the bf16 units (benchmarks/README.md)."""
        if self.autocast and self.device.type == "cpu":
            return sdpa_kernel([SDPBackend.MATH])
        return contextlib.nullcontext()

    def _initialise_from(self, source: RotVLA, checkpoint: Path) -> None:
        """Start from an earlier stage's weights, every one of them. Tensors left out only where
        that is the point: the latent planner's, when Stage III trains without it (the paper's
        ablation). Any other missing, unexpected or mis-shaped tensor is an error."""
        incoming = source.state_dict()
        own = self.model.state_dict()
        unusable = sorted(k for k in incoming if k not in own or incoming[k].shape != own[k].shape)
        planner_only = [k for k in unusable if k.startswith("expert.plan_")]
        if not self.model.config.latent_planner and planner_only:
            print(
                f"[{self.stage}] without the latent planner: {len(planner_only)} tensors of {checkpoint} left out "
                f"({planner_only})",
                flush=True,
            )
            unusable = [k for k in unusable if k not in planner_only]
        missing = sorted(k for k in own if k not in incoming)
        if unusable or missing:
            raise ValueError(
                f"{checkpoint} does not fit this model: unusable {unusable[:5]}, missing {missing[:5]} "
                "(a Stage III takes the Stage II model's settings: use_state, cameras, preset)"
            )
        # The planner's own tensors keep this model's (empty) values.
        self.model.load_state_dict({**own, **{k: v for k, v in incoming.items() if k not in planner_only}})

    def _model_config(self, preset: RotVLAConfig) -> RotVLAConfig:
        """The preset, bound to the data by the contract: the step period is the datasets',
        the actions (and state) their layout, the views their cameras. Stage III learns robot
        actions and is what gets deployed, so every source must have them in the model's
        layout, at one frame rate, with every view; Stage II learns latent plans, which any
        video gives."""
        config, mixture = self.config, self.dataset
        layout = tuple(preset.action_names)
        use_state = preset.use_state if config.use_state is None else config.use_state
        if self.stage == "stage3":
            for source, part, views in zip(self.sources, mixture.parts, mixture.view_cameras):
                if not part.action_names:
                    raise ValueError(
                        f"{source.path} has no actions (action-free video): it trains Stages I and II; "
                        "stage3 learns robot actions"
                    )
                if part.action_names != layout:
                    raise ValueError(f"{source.path}: dataset actions {part.action_names} are not the model's {layout}")
                if use_state and part.state_names != layout:
                    raise ValueError(
                        f"{source.path}: dataset state {part.state_names} is not in the action layout {layout}"
                    )
                blank = [v for v in mixture.views if v not in views]
                if blank:
                    raise ValueError(
                        f"stage3 needs every view the model takes from every dataset; {source.path} lacks {blank}"
                    )
            rates = sorted({part.fps for part in mixture.parts})
            if len(rates) > 1:
                raise ValueError(f"stage3 learns chunks of one step period; the datasets are at {rates} fps")
        robot = [part for part, ok in zip(mixture.parts, mixture.has_actions) if ok]
        return dataclasses.replace(
            preset,
            mode=self.stage,
            dt=1.0 / (robot or mixture.parts)[0].fps,
            use_state=use_state,
            camera_names=mixture.views,
            latent_planner=config.latent_planner or self.stage == "stage2",
        )

    def _normalizers(self, model_config: RotVLAConfig) -> tuple[ActionNormalizer, ActionNormalizer | None]:
        """Action (and state) statistics over the training rows of the sources that have them;
        identity where none has (a Stage II on video alone: Stage III computes its own)."""

        def over(has: list[bool], values: str) -> ActionNormalizer:
            data = [
                getattr(part, values)[rows - offset]
                for part, rows, offset, ok in zip(self.dataset.parts, self.rows, self.dataset.offsets, has)
                if ok
            ]
            if not data:
                return ActionNormalizer.identity(model_config.action_names)
            return ActionNormalizer.from_data(model_config.action_names, np.concatenate(data))

        state = over(self.dataset.has_state, "state") if model_config.use_state else None
        return over(self.dataset.has_actions, "action"), state

    # -- optimisation ---------------------------------------------------------------------

    def _param_groups(self) -> list[dict]:
        if self.stage == "stage1":
            return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr_scale": 1.0}]
        backbone = [p for p in self.model.backbone.parameters() if p.requires_grad]
        others = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        return [
            {"params": others, "lr_scale": 1.0, "name": "expert"},
            {"params": backbone, "lr_scale": self.config.vlm_lr_scale, "name": "vlm"},
        ]

    def _lr_factor(self, step: int) -> float:
        c = self.config
        if c.scheduler == "constant":
            return 1.0
        warm = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        progress = min(1.0, step / max(1, c.steps))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply_group_scales(self) -> None:
        """X-VLA: after the action expert's warm-up (the VLM frozen: ``_freeze_vlm``), the VLM
        learns at ``vlm_lr_scale`` of the rate; the scheduler's factor applies to both."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * group.get("lr_scale", 1.0) * self._lr_factor(self.step)

    # -- data -----------------------------------------------------------------------------

    def _loader(self, start: int, stop: int):
        """Batches of items for steps [start, stop), loaded by ``num_workers`` processes."""
        sampler = StepBatchSampler(
            len(self.dataset),
            self.config.batch_size,
            self.config.seed,
            start,
            stop,
            self.rank,
            self.world,
            self.rows,
            source_weights(self.sources, self.rows, self.config.pooled),
        )
        # A generator of its own: the loader draws its workers' seeds from it, not from the global
        # RNG that the flow-matching noise comes from (a resumed run must draw the same noise).
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.config.num_workers,
            collate_fn=list,
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def _batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Frames arrive at the model's size (the dataset applies the contract's prepare_image).
        A view a sample's dataset lacks is a blank image masked out (``view_mask``, only when
        some view is missing), the state of a dataset without it likewise (``state_mask``)."""
        batch = {}
        if "clip" in items[0]:
            batch["clips"] = _to_tensor([it["clip"] for it in items]).to(self.device)  # (B, L, 3, S, S)
        if self.stage == "stage1":
            return batch
        if self.labels is not None:
            horizon, stride = self.model_config.latent_horizon, self.config.frame_stride
            plans = np.stack(
                [
                    self.labels[it["source"]][plan_rows(self.dataset.parts[it["source"]], it["index"], stride, horizon)]
                    for it in items
                ]
            )
            batch["plan"] = torch.from_numpy(plans).flatten(1, 2).to(self.device)  # (B, K, n, n), K = horizon x q
        cameras = self.model_config.camera_names
        size = self.model_config.image_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        views = _to_tensor([[it["images"].get(c, blank) for c in cameras] for it in items])  # (B, V, 3, S, S)
        view_mask = torch.tensor([[c in it["images"] for c in cameras] for it in items])  # (B, V)
        if self.config.random_shift:
            views = random_shift(views, self.config.random_shift, self.jitter)
        if self.config.color_jitter:
            views = color_jitter(views, self.jitter)
        # A compiled loss wants one shape: every batch padded to the instruction limit.
        ids, mask = self.model.backbone.tokenize([it["instruction"] for it in items], pad_to_limit=self.config.compile)
        batch.update(images=views.to(self.device), input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        if not view_mask.all():
            batch["view_mask"] = view_mask.to(self.device)
        if self.stage == "stage3":  # every source has actions (checked when the run starts)
            actions = np.stack([self.normalizer.normalize(it["actions"]) for it in items]).astype(np.float32)
            batch["actions"] = torch.from_numpy(actions).to(self.device)  # (B, H, A)
        if self.state_normalizer is not None:
            width = len(self.model_config.action_names)
            state = np.stack(
                [self.state_normalizer.normalize(it["state"]) if it["has_state"] else np.zeros(width) for it in items]
            ).astype(np.float32)
            batch["state"] = torch.from_numpy(state).to(self.device)  # (B, A)
            state_mask = torch.tensor([bool(it["has_state"]) for it in items])  # (B,)
            if not state_mask.all():
                batch["state_mask"] = state_mask.to(self.device)
        return batch

    # -- the loop -------------------------------------------------------------------------

    def _flow_noise(self, count: int, first: int) -> FlowNoise:
        """The flow-matching draws of ``count`` samples at positions ``first``.. of this step's
        whole batch, each from its own generator seeded by (seed, step, position): the same
        numbers whichever process and micro-batch a sample lands in, so that N processes train
        exactly as one does on the same global batch."""
        c = self.model_config
        draws = []
        for position in range(first, first + count):
            generator = torch.Generator().manual_seed((self.config.seed * 1_000_003 + self.step) * 1_000_003 + position)
            t = sample_time(1, c.flow, generator=generator)
            plan = torch.randn((1, c.plan_tokens, c.latent_dim**2), generator=generator)
            actions = torch.randn((1, c.action_horizon, c.action_dim), generator=generator)
            draws.append((t, plan, actions))
        t, plan, actions = (torch.cat(x) for x in zip(*draws))
        return FlowNoise(t, plan, actions if self.stage == "stage3" else None).to(self.device)

    def _losses(self, items: list[dict], first: int) -> dict[str, torch.Tensor]:
        batch = self._batch(items)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast), self._attention():
            if self.stage == "stage1":
                return self.module(batch["clips"])
            plan = (
                batch["plan"]
                if self.labels is not None
                else torch.zeros(self.model.plan_shape(len(items)), device=self.device)
            )
            return self.module(
                batch["images"],
                batch["input_ids"],
                batch["attention_mask"],
                plan,
                batch.get("actions"),
                batch.get("state"),
                self._flow_noise(len(items), first),
                view_mask=batch.get("view_mask"),
                state_mask=batch.get("state_mask"),
            )

    def train_step(self, items: list[dict]) -> dict[str, float]:
        """One optimiser step on this process's share of the batch, in micro-batches of
        ``micro_batch_size`` whose gradients add up (synchronised once, on the last)."""
        self._freeze_vlm(self._in_warm_up())
        self._apply_group_scales()
        self.optimizer.zero_grad(set_to_none=True)
        size = self.config.micro_batch_size or len(items)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        logged: dict[str, float] = {}
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            with contextlib.nullcontext() if last or self.world == 1 else self.module.no_sync():
                losses = self._losses(part, self.rank * len(items) + k * size)
                (losses["loss"] * (len(part) / len(items))).backward()  # the share's mean
            for name, value in losses.items():
                logged[name] = logged.get(name, 0.0) + float(value.detach()) * len(part) / len(items)
        if self.config.grad_clip > 0:
            logged["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        if self.world > 1:  # what is logged is the whole batch's
            values = torch.tensor(list(logged.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values)
            logged = dict(zip(logged, (values / self.world).tolist()))
        return logged

    def run(self, steps: int | None = None, on_log=None) -> None:
        """Train until ``config.steps`` (or ``steps`` more), saving and logging as configured."""
        stop = self.config.steps if steps is None else min(self.config.steps, self.step + steps)
        self.output.mkdir(parents=True, exist_ok=True)
        started, first = time.perf_counter(), self.step
        for items in self._loader(self.step, stop):
            losses = self.train_step(items)
            if self.rank == 0 and (self.step % self.config.log_every == 0 or self.step == stop):
                record = {
                    "step": self.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds_per_step": (time.perf_counter() - started) / max(1, self.step - first),
                    **losses,
                }
                with open(self.output / "log.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
                print(
                    f"[{self.stage}] step {self.step}/{self.config.steps} "
                    + " ".join(f"{k}={v:.4g}" for k, v in losses.items()),
                    flush=True,
                )
                if on_log:
                    on_log(record)
            if self.step % self.config.save_every == 0 or self.step == stop:
                self._check_replicas_agree()
                if self.rank == 0:
                    self.save()
        if self.world > 1:  # every process returns once the last checkpoint is written
            torch.distributed.barrier()

    def close(self) -> None:
        """End the process group, after every DistributedDataParallel wrapper is gone. A wrapper
        keeps its group alive past destroy_process_group; the group then dies while the
        interpreter shuts down, and a gloo worker thread that reaches for the GIL there aborts
        the process ("terminate called without an active exception", seen in CI). Raises if a
        wrapper is still referenced, so that the crash cannot come back as a rare flake."""
        if not torch.distributed.is_initialized():
            return
        self.module = LossModule(self.model)
        gc.collect()  # the wrappers replaced when the warm-up ends sit in reference cycles
        left = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
        torch.distributed.destroy_process_group()
        if left:
            raise RuntimeError(f"{left} DistributedDataParallel wrapper(s) outlive the process group")

    def _check_replicas_agree(self) -> None:
        """Every process must hold the same weights (DDP keeps them so); a checkpoint of one
        replica among diverged ones would be a model nobody trained. Raises if they differ."""
        if self.world == 1:
            return
        sums = torch.stack([p.detach().double().sum() for p in self.model.parameters()])
        low, high = sums.clone(), sums.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.allclose(low, high, rtol=1e-9, atol=1e-9):
            worst = int((high - low).argmax())
            name = [n for n, _ in self.model.named_parameters()][worst]
            raise RuntimeError(f"step {self.step}: the processes' weights differ (first at {name})")

    # -- checkpoints ----------------------------------------------------------------------

    def save(self) -> Path:
        """Write <output>/step-N and <output>/last (atomically replaced). With an EMA, the
        checkpoint's weights are the averaged ones and train_state.pt keeps the raw ones."""
        staging = self.output / f".last.{self.step}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        weights = self.ema.module if self.ema is not None else self.model
        if self.stage == "stage1":
            save_lam(weights, staging)
        else:  # a CPU copy: the policy wrapper moves and casts the model it is given
            copy = copy_module(weights).cpu()
            RotVLAPolicy(
                copy,
                self.normalizer,
                device="cpu",
                dtype="float32",
                state_normalizer=self.state_normalizer,
                instructions=self.instructions,
            ).save_pretrained(staging)
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "jitter_rng": self.jitter.get_state(),
                "config": dataclasses.asdict(self.config),
                **(
                    {"model": self.model.state_dict(), "ema_averaged": int(self.ema.n_averaged)}
                    if self.ema is not None
                    else {}
                ),
            },
            staging / TRAIN_STATE,
        )
        shutil.copytree(staging, self.output / f"step-{self.step}", dirs_exist_ok=True)
        last = self.output / "last"
        old = self.output / ".last.old"
        if last.exists():
            last.rename(old)
        staging.rename(last)
        shutil.rmtree(old, ignore_errors=True)
        return last

    def _load_state(self, directory: Path) -> None:
        if self.stage == "stage1":
            saved = load_lam(directory).state_dict()
        else:
            saved = RotVLAPolicy.from_pretrained(directory, device="cpu", dtype="float32").model.state_dict()
        state = torch.load(directory / TRAIN_STATE, map_location="cpu", weights_only=False)
        if self.ema is not None:
            self.ema.module.load_state_dict(saved)
            self.ema.n_averaged.fill_(state["ema_averaged"])
            saved = state["model"]
        self.model.load_state_dict(saved)
        self.model.to(self.device).train()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.jitter.set_state(state["jitter_rng"])
        self.step = int(state["step"])
