"""The training stages, each one unit found by name in ``STAGES``: what it builds and loads (the
model, the data it reads), what it feeds the model, its loss, and how its checkpoint is
written and read. ``Trainer`` (trainer.py) is the one loop around them: optimiser, schedule,
EMA, DDP, saving and resuming. A new stage is one ``Stage`` subclass under ``@register_stage``.

The paper's hyperparameters (appendix C, Table 5) are each stage's ``defaults``:

| | Stage I (LAM) | Stage II (latent pretraining) | Stage III (finetuning) |
|---|---|---|---|
| optimiser | AdamW, lr 1e-4 | AdamW, lr 1e-4 | AdamW, lr 1e-4 |
| schedule | constant | cosine | cosine |
| weight decay | 0.01 | 0.001 | 0.001 |
| gradient clip | - | 1.0 | 1.0 |
| warm-up (action expert only, VLM frozen; X-VLA) | 0 | 5k | 5k |
| steps | 200k | 200k | 40k (real world) |
| batch | 256 | 256 | 128 |
| augmentation | - | colour jitter | colour jitter |

The VLM's reduced learning rate (X-VLA) is not given in the paper; X-VLA's 0.1 is used.
"""

from __future__ import annotations

import dataclasses
from copy import deepcopy as copy_module
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.mixture import DatasetMixture
from ..model.config import LAM_PRESETS, PRESETS, RotVLAConfig
from ..model.lam import LatentActionModel, pretrained_dino_config
from ..model.rotvla import RotVLA
from ..policy.checkpoint import checkpoint_id, load_lam, save_lam
from ..policy.normalization import ActionNormalizer
from ..policy.policy import RotVLAPolicy
from .augment import color_jitter, random_shift, to_tensor
from .latent_labels import latent_labels, plan_rows

if TYPE_CHECKING:
    from .trainer import Trainer


class Stage:
    """One stage of training. Its methods take the trainer: the stage holds no state of a run."""

    name = ""
    defaults: dict = {}  # the paper's hyperparameters (the module's table)
    describes_latents = False  # the data summary says which camera gives the latent actions

    def build(self, trainer: Trainer) -> tuple[str, ...]:
        """Set ``trainer.model``, ``.dataset`` and ``.model_config`` (and ``.lam``, ``.labels``
        where the stage uses them); return the instructions of the checkpoint it starts from."""
        raise NotImplementedError

    def normalizers(self, trainer: Trainer) -> tuple[ActionNormalizer | None, ActionNormalizer | None]:
        """(actions, state) statistics the checkpoint carries."""
        return None, None

    def checkpoint_activations(self, trainer: Trainer) -> None:
        """Recompute activations in the backward pass (``activation_checkpointing``): memory
        for time. Nothing by default."""

    def param_groups(self, trainer: Trainer) -> list[dict]:
        return [{"params": [p for p in trainer.model.parameters() if p.requires_grad], "lr_scale": 1.0}]

    def warm_up_parameters(self, trainer: Trainer) -> list[torch.nn.Parameter]:
        """Those frozen for the first ``warmup_steps`` (X-VLA's VLM); none by default."""
        return []

    def unused_parameters(self, trainer: Trainer) -> bool:
        """Whether some parameters have no part in the loss (DDP must be told)."""
        return False

    def batch(self, trainer: Trainer, items: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, trainer: Trainer, batch: dict[str, torch.Tensor], first: int) -> dict[str, torch.Tensor]:
        """The losses of ``batch`` through ``trainer.module``; ``first``: the batch's position in
        the step's whole batch (the flow-matching draws are seeded by it)."""
        raise NotImplementedError

    def save(self, trainer: Trainer, weights: torch.nn.Module, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        raise NotImplementedError


STAGES: dict[str, Stage] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: the stage, under its ``name``, for ``rotvla_train <name>``."""
    if cls.name in STAGES and type(STAGES[cls.name]) is not cls:
        raise ValueError(f"stage {cls.name!r} is already {type(STAGES[cls.name]).__name__}")
    STAGES[cls.name] = cls()
    return cls


@register_stage
class LatentActionStage(Stage):
    """Stage I: the latent action model learns from frame triplets of any video."""

    name = "stage1"
    defaults = dict(
        lr=1e-4,
        scheduler="constant",
        weight_decay=0.01,
        grad_clip=0.0,
        warmup_steps=0,
        steps=200_000,
        batch_size=256,
        color_jitter=False,
    )
    describes_latents = True

    def build(self, trainer):
        config = trainer.config
        lam_config = LAM_PRESETS[config.preset]()
        if config.dino_path:
            lam_config.dino = pretrained_dino_config(config.dino_path, lam_config.dino.image_size)
        trainer.model = LatentActionModel(lam_config)
        trainer.model_config = lam_config
        trainer.dataset = DatasetMixture(
            trainer.sources,
            latent_camera=config.latent_camera,
            clip_length=3,
            clip_stride=config.frame_stride,
            clip_image_size=lam_config.dino.image_size,
            video_cache_mb=config.video_cache_mb,
        )  # triplets
        return ()

    def batch(self, trainer, items):
        return {"clips": to_tensor([it["clip"] for it in items]).to(trainer.device)}  # (B, L, 3, S, S)

    def loss(self, trainer, batch, first):
        return trainer.module(batch["clips"])

    def save(self, trainer, weights, directory):
        save_lam(weights, directory)

    def load_weights(self, directory):
        return load_lam(directory).state_dict()


class RotVLAStage(Stage):
    """Stages II and III: the VLA with its action expert, from a preset or an earlier stage's
    checkpoint, on the data's layout and rate. The loss is the joint flow matching of the
    latent plan and (Stage III) the robot actions."""

    trains_actions = False  # robot actions are a target (else the latent plan alone)
    planner_always = False  # the latent planner is trained whatever the config says

    def check_sources(self, trainer: Trainer, layout: tuple[str, ...], use_state: bool) -> None:
        """Refuse data this stage cannot learn from (nothing by default)."""

    def build(self, trainer):
        config = trainer.config
        model_config = PRESETS[config.preset]()
        source, initial_instructions = None, ()
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
        trainer.dataset = DatasetMixture(
            trainer.sources,
            views=tuple(config.cameras) if config.cameras else tuple(model_config.camera_names),
            action_names=model_config.action_names,
            latent_camera=config.latent_camera,
            action_horizon=model_config.action_horizon,
            image_size=model_config.image_size,
            video_cache_mb=config.video_cache_mb,
        )
        model_config = self._bind_to_data(trainer, model_config)
        trainer.model_config = model_config
        if model_config.plan_tokens:
            trainer.lam = self._frozen_lam(trainer, model_config)
        if source is not None:
            backbone = source.backbone
            trainer.model = RotVLA(model_config, backbone.model.config, backbone.tokenizer)
            self._initialise_from(trainer, source, Path(config.init_checkpoint))
        else:
            trainer.model = RotVLA(model_config)
        if trainer.lam is not None:  # per source (N_d, q, n, n): every frame's latent action, cached on disk
            trainer.labels = self._latent_labels(trainer)
        return initial_instructions

    def _bind_to_data(self, trainer: Trainer, preset: RotVLAConfig) -> RotVLAConfig:
        """The preset, bound to the data by the contract: the step period is the datasets', the
        actions (and state) their layout, the views their cameras."""
        config, mixture = trainer.config, trainer.dataset
        use_state = preset.use_state if config.use_state is None else config.use_state
        self.check_sources(trainer, tuple(preset.action_names), use_state)
        robot = [part for part, ok in zip(mixture.parts, mixture.has_actions) if ok]
        return dataclasses.replace(
            preset,
            mode=self.name,
            dt=1.0 / (robot or mixture.parts)[0].fps,
            use_state=use_state,
            camera_names=mixture.views,
            latent_planner=config.latent_planner or self.planner_always,
        )

    def _frozen_lam(self, trainer: Trainer, model_config: RotVLAConfig) -> LatentActionModel:
        if not trainer.config.lam_checkpoint:
            raise ValueError(f"{self.name} with the latent planner needs the frozen Stage I LAM: --lam-checkpoint")
        lam = load_lam(Path(trainer.config.lam_checkpoint)).to(trainer.device).eval()
        for p in lam.parameters():
            p.requires_grad_(False)
        if (lam.config.latent_dim, lam.config.num_latent_tokens) != (
            model_config.latent_dim,
            model_config.num_latent_tokens,
        ):
            raise ValueError("the LAM's latent space does not match the model's (latent_dim, num_latent_tokens)")
        return lam

    def _latent_labels(self, trainer: Trainer) -> list[np.ndarray]:
        """Each source's labels from the cache. Under torchrun the first process of each node
        computes what the cache lacks while the others wait, then they read it (a cache on a
        shared file system is written by one process per node, atomically)."""
        config = trainer.config
        computes = trainer.local_rank == 0
        if trainer.world > 1 and not computes:
            torch.distributed.barrier()
        labels = [
            latent_labels(
                part,
                trainer.lam,
                checkpoint_id(Path(config.lam_checkpoint)),
                camera,
                config.frame_stride,
                Path(config.latent_cache_dir) if config.latent_cache_dir else None,
                device=trainer.device,
            )
            for part, camera in zip(trainer.dataset.parts, trainer.dataset.latent_cameras)
        ]
        if trainer.world > 1 and computes:
            torch.distributed.barrier()
        return labels

    def _initialise_from(self, trainer: Trainer, source: RotVLA, checkpoint: Path) -> None:
        """Start from an earlier stage's weights, every one of them. Tensors left out only where
        that is the point: the latent planner's, when Stage III trains without it (the paper's
        ablation). Any other missing, unexpected or mis-shaped tensor is an error."""
        incoming = source.state_dict()
        own = trainer.model.state_dict()
        unusable = sorted(k for k in incoming if k not in own or incoming[k].shape != own[k].shape)
        planner_only = [k for k in unusable if k.startswith("expert.plan_")]
        if not trainer.model.config.latent_planner and planner_only:
            print(
                f"[{self.name}] without the latent planner: {len(planner_only)} tensors of {checkpoint} left out "
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
        trainer.model.load_state_dict({**own, **{k: v for k, v in incoming.items() if k not in planner_only}})

    def normalizers(self, trainer):
        """Action (and state) statistics over the training rows of the sources that have them;
        identity where none has (a Stage II on video alone: Stage III computes its own)."""
        names = trainer.model_config.action_names
        dataset = trainer.dataset

        def over(has: list[bool], values: str) -> ActionNormalizer:
            data = [
                getattr(part, values)[rows - offset]
                for part, rows, offset, ok in zip(dataset.parts, trainer.rows, dataset.offsets, has)
                if ok
            ]
            if not data:
                return ActionNormalizer.identity(names)
            return ActionNormalizer.from_data(names, np.concatenate(data))

        state = over(dataset.has_state, "state") if trainer.model_config.use_state else None
        return over(dataset.has_actions, "action"), state

    def param_groups(self, trainer):
        model = trainer.model
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        others = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        return [
            {"params": others, "lr_scale": 1.0, "name": "expert"},
            {"params": backbone, "lr_scale": trainer.config.vlm_lr_scale, "name": "vlm"},
        ]

    def warm_up_parameters(self, trainer):
        return [p for p in trainer.model.backbone.parameters() if p.requires_grad]

    def checkpoint_activations(self, trainer):
        trainer.model.set_activation_checkpointing(True)

    def batch(self, trainer, items):
        """Frames arrive at the model's size (the dataset applies the contract's prepare_image).
        A view a sample's dataset lacks is a blank image masked out (``view_mask``, only when
        some view is missing), the state of a dataset without it likewise (``state_mask``)."""
        config, model_config, device = trainer.config, trainer.model_config, trainer.device
        batch = {}
        if trainer.labels is not None:
            horizon, stride = model_config.latent_horizon, config.frame_stride
            parts = trainer.dataset.parts
            plans = np.stack(
                [
                    trainer.labels[it["source"]][plan_rows(parts[it["source"]], it["index"], stride, horizon)]
                    for it in items
                ]
            )
            batch["plan"] = torch.from_numpy(plans).flatten(1, 2).to(device)  # (B, K, n, n), K = horizon x q
        cameras, size = model_config.camera_names, model_config.image_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        views = to_tensor([[it["images"].get(c, blank) for c in cameras] for it in items])  # (B, V, 3, S, S)
        view_mask = torch.tensor([[c in it["images"] for c in cameras] for it in items])  # (B, V)
        if config.random_shift:
            views = random_shift(views, config.random_shift, trainer.jitter)
        if config.color_jitter:
            views = color_jitter(views, trainer.jitter)
        # A compiled loss wants one shape: every batch padded to the instruction limit.
        ids, mask = trainer.model.backbone.tokenize([it["instruction"] for it in items], pad_to_limit=config.compile)
        batch.update(images=views.to(device), input_ids=ids.to(device), attention_mask=mask.to(device))
        if not view_mask.all():
            batch["view_mask"] = view_mask.to(device)
        if self.trains_actions:  # every source has actions (check_sources)
            actions = np.stack([trainer.normalizer.normalize(it["actions"]) for it in items]).astype(np.float32)
            batch["actions"] = torch.from_numpy(actions).to(device)  # (B, H, A)
        if trainer.state_normalizer is not None:
            width = len(model_config.action_names)
            state = np.stack(
                [
                    trainer.state_normalizer.normalize(it["state"]) if it["has_state"] else np.zeros(width)
                    for it in items
                ]
            ).astype(np.float32)
            batch["state"] = torch.from_numpy(state).to(device)  # (B, A)
            state_mask = torch.tensor([bool(it["has_state"]) for it in items])  # (B,)
            if not state_mask.all():
                batch["state_mask"] = state_mask.to(device)
        return batch

    def loss(self, trainer, batch, first):
        count = len(batch["images"])
        plan = batch["plan"] if "plan" in batch else torch.zeros(trainer.model.plan_shape(count), device=trainer.device)
        return trainer.module(
            batch["images"],
            batch["input_ids"],
            batch["attention_mask"],
            plan,
            batch.get("actions"),
            batch.get("state"),
            trainer.flow_noise(count, first, with_actions=self.trains_actions),
            view_mask=batch.get("view_mask"),
            state_mask=batch.get("state_mask"),
        )

    def save(self, trainer, weights, directory):
        copy = copy_module(weights).cpu()  # the policy wrapper moves and casts the model it is given
        RotVLAPolicy(
            copy,
            trainer.normalizer,
            device="cpu",
            dtype="float32",
            state_normalizer=trainer.state_normalizer,
            instructions=trainer.instructions,
        ).save_pretrained(directory)

    def load_weights(self, directory):
        return RotVLAPolicy.from_pretrained(directory, device="cpu", dtype="float32").model.state_dict()


@register_stage
class LatentPretraining(RotVLAStage):
    """Stage II: the VLA learns to plan latent actions (the frozen LAM's labels) from any
    video; the action expert's action layers have no part in it."""

    name = "stage2"
    defaults = dict(
        lr=1e-4,
        scheduler="cosine",
        weight_decay=0.001,
        grad_clip=1.0,
        warmup_steps=5_000,
        steps=200_000,
        batch_size=256,
        color_jitter=True,
    )
    planner_always = True

    def unused_parameters(self, trainer):
        return True  # the expert's action layers (the plan alone is learnt)


@register_stage
class ActionTraining(RotVLAStage):
    """Stage III: robot actions, with the latent planner (the paper's method) or without it
    (its ablation and the actions-alone baseline). What gets deployed, so every source must
    have actions in the model's layout, at one frame rate, with every view."""

    name = "stage3"
    defaults = {**LatentPretraining.defaults, "steps": 40_000, "batch_size": 128}  # the table: II's, shorter
    trains_actions = True

    def unused_parameters(self, trainer):
        return not trainer.model.config.plan_tokens  # the (empty) plan layers without the planner

    def check_sources(self, trainer, layout, use_state):
        mixture = trainer.dataset
        for source, part, views in zip(trainer.sources, mixture.parts, mixture.view_cameras):
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
