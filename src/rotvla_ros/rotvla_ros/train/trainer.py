"""One training loop for every stage (``stages``: what each builds, feeds and learns): data
from a LeRobot v3 dataset, AdamW with the stage's schedule, gradient clipping, bf16 autocast
where the device multiplies bf16 natively, optionally torch.compile, DistributedDataParallel
when started by ``torchrun`` (one process per GPU), and a resumable run directory:

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
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..data.lerobot_dataset import LeRobotV3Dataset
from ..data.mixture import DatasetMixture, parse_sources
from ..model.flow_matching import FlowNoise, sample_time
from ..model.lam import LatentActionModel
from ..policy.policy import native_bfloat16
from .config import TrainConfig
from .stages import STAGES, Stage

TRAIN_STATE = "train_state.pt"


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


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
    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.rank, self.world, self.local_rank = _distributed()
        if config.device == "auto":
            self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(config.device)
        self.autocast = config.precision == "bf16" or (config.precision == "auto" and native_bfloat16(self.device))
        self.output = Path(config.output)
        torch.manual_seed(config.seed + self.rank)
        self.stage: Stage = STAGES[config.stage]
        self.sources = parse_sources(config.dataset)
        self.lam: LatentActionModel | None = None
        self.labels: list[np.ndarray] | None = None  # per source: (N_d, q, n, n)
        self.model: torch.nn.Module
        self.dataset: DatasetMixture
        initial_instructions = self.stage.build(self)  # the model, its data (and LAM, labels)
        if config.num_workers == 0 and self.dataset.preload():  # a small dataset: decoded once, in order
            print(f"[{self.stage.name}] {len(self.dataset)} frames decoded into memory", flush=True)
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
        self._describe_data()
        self.normalizer, self.state_normalizer = self.stage.normalizers(self)
        self.model.to(self.device).train()
        if config.activation_checkpointing:
            self.stage.checkpoint_activations(self)
        share = config.batch_size // self.world
        if config.batch_size % self.world or (config.micro_batch_size and share % config.micro_batch_size):
            raise ValueError(
                f"batch_size {config.batch_size} over {self.world} processes in micro-batches of "
                f"{config.micro_batch_size or share}: each must divide the one before"
            )
        self.optimizer = torch.optim.AdamW(
            self.stage.param_groups(self), lr=config.lr, weight_decay=config.weight_decay
        )
        # The parameters that learn once the warm-up is over (X-VLA's VLM; frozen until then).
        self._warm_up_frozen = self.stage.warm_up_parameters(self)
        self._frozen: bool | None = None
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
        self._freeze_for_warm_up(self._in_warm_up())

    def _describe_data(self) -> None:
        """What the run learns from, printed once: sources, rows left out, shares, interventions."""
        config = self.config
        if self.rank == 0:
            for line in self.dataset.describe(latent=self.stage.describes_latents or self.lam is not None):
                print(f"[{self.stage.name}] {line}", flush=True)
        left_out = len(self.dataset) - sum(len(np.unique(r)) for r in self.rows)
        if left_out:
            print(
                f"[{self.stage.name}] {left_out} frames left out (failed episodes, interventions at weight 0, "
                "the policy's own without policy_frames)",
                flush=True,
            )
        if config.pooled and self.rank == 0:  # the mixture weights printed above do not apply
            shares = source_weights(self.sources, self.rows, pooled=True)
            print(
                f"[{self.stage.name}] pooled: each source drawn by the rows it gives, "
                + ", ".join(f"{n:.0f} ({n / sum(shares):.0%})" for n in shares),
                flush=True,
            )
        interventions = sum(int(part.intervention.sum()) for part in self.dataset.parts)
        if interventions:
            print(
                f"[{self.stage.name}] {interventions} intervention frames, each drawn "
                f"{config.intervention_weight} times an epoch",
                flush=True,
            )

    def _in_warm_up(self) -> bool:
        return bool(self._warm_up_frozen) and self.step < self.config.warmup_steps

    def _freeze_for_warm_up(self, frozen: bool) -> None:
        """X-VLA: the VLM is frozen while the action expert warms up: no gradient, so no
        backward through it, nothing in the clipped norm or AdamW's moments. Under DDP the
        wrapper is rebuilt when this changes (it registers the parameters that learn)."""
        if frozen == self._frozen:
            return
        for p in self._warm_up_frozen:
            p.requires_grad_(not frozen)
        self._frozen = frozen
        if self.world > 1:
            self.module = torch.nn.parallel.DistributedDataParallel(
                self._loss_module(),
                device_ids=[self.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.stage.unused_parameters(self),
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

    def _lr_factor(self, step: int) -> float:
        c = self.config
        if c.scheduler == "constant":
            return 1.0
        warm = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        progress = min(1.0, step / max(1, c.steps))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply_group_scales(self) -> None:
        """X-VLA: after the action expert's warm-up (the VLM frozen: ``_freeze_for_warm_up``), the VLM
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
        return self.stage.batch(self, items)

    # -- the loop -------------------------------------------------------------------------

    def flow_noise(self, count: int, first: int, with_actions: bool) -> FlowNoise:
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
        return FlowNoise(t, plan, actions if with_actions else None).to(self.device)

    def _losses(self, items: list[dict], first: int) -> dict[str, torch.Tensor]:
        batch = self._batch(items)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast), self._attention():
            return self.stage.loss(self, batch, first)

    def train_step(self, items: list[dict]) -> dict[str, float]:
        """One optimiser step on this process's share of the batch, in micro-batches of
        ``micro_batch_size`` whose gradients add up (synchronised once, on the last)."""
        self._freeze_for_warm_up(self._in_warm_up())
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
                    f"[{self.stage.name}] step {self.step}/{self.config.steps} "
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
        self.stage.save(self, self.ema.module if self.ema is not None else self.model, staging)
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
        saved = self.stage.load_weights(directory)
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
