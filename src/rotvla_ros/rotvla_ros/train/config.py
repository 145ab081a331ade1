"""Training configurations: a plain dataclass, loaded from YAML, with each stage's paper
hyperparameters (``stages``, appendix C, Table 5) as its defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from rotvla_common.action_space import CAMERA_NAMES

from .stages import STAGES

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    stage: str = "stage3"
    # A LeRobot v3 dataset directory, or a weighted mixture of them (data/mixture.py): a list
    # of paths and of mappings {path, weight, cameras: {view: its camera}, latent_camera}.
    dataset: str | list = ""
    output: str = ""  # run directory: checkpoints, logs
    preset: str = "rotvla-1.7b"  # model size (sim for the simulated cell on a CPU, tiny for tests)
    init_checkpoint: str = ""  # stage III: the Stage II checkpoint to start from
    lam_checkpoint: str = ""  # stages II and III: the frozen Stage I LAM
    # Real weights from local directories (HF format; nothing is downloaded). Stage I: DINOv2
    # (e.g. dinov2-base); its architecture replaces the preset's. Stage II, or a Stage III from
    # scratch: InternVL3.5 with its tokenizer (e.g. InternVL3_5-1B-HF). A Stage III from
    # --init-checkpoint takes the architecture, backbone and tokenizer of that checkpoint.
    dino_path: str = ""
    vlm_path: str = ""
    use_state: bool | None = None  # the robot state as model input; None: the preset's
    cameras: list[str] | None = None  # the views the model takes, in order; None: the preset's (all three)
    only_successful: bool = True  # leave out the episodes marked failed (episodes' success flag)
    # How many times an epoch draws each intervention frame (an operator's correction after a
    # takeover; the dataset's intervention column) against once for every other frame: 1 is
    # HG-DAgger's plain aggregate, more weights the corrections up, 0 leaves them out.
    intervention_weight: int = 1
    # Learn from the frames the policy drove in a recorded deployment. Their labels are the
    # policy's own actions, so False is HG-DAgger's aggregate: the demonstrations and the
    # operator's corrections only.
    policy_frames: bool = True
    # The sources drawn as one dataset, each in proportion to the rows it gives (an aggregate
    # of demonstrations and corrections), instead of by its mixture weight.
    pooled: bool = False
    latent_planner: bool = True  # stage III: False trains robot actions alone (no LAM, no plan)
    random_shift: int = 0  # augmentation: each view shifted by up to this many pixels (edge-padded)
    ema_decay: float = 0.0  # > 0: checkpoints hold an exponential moving average of the weights (Diffusion Policy's)
    steps: int = 40_000
    batch_size: int = 128  # the whole step's, split over the processes (torchrun)
    micro_batch_size: int = 0  # rows per forward/backward in one process; 0: its whole share
    activation_checkpointing: bool = False  # stages II/III: recompute activations in backward (less memory)
    lr: float = 1e-4
    vlm_lr_scale: float = 0.1  # X-VLA: the VLM learns this much slower
    weight_decay: float = 0.001
    scheduler: str = "cosine"  # constant or cosine
    warmup_steps: int = 5_000  # the VLM stays frozen while the action expert warms up
    grad_clip: float = 1.0  # 0: none
    color_jitter: bool = True
    latent_camera: str = CAMERA_NAMES[0]  # whose frames the LAM labels: the head view sees the whole scene
    frame_stride: int = 5  # frames between the LAM's triplet / plan frames
    latent_cache_dir: str = ""  # where latent-action labels are cached (empty: ~/.cache/rotvla/latent_labels)
    save_every: int = 1_000
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    video_cache_mb: float = 1024  # decoded frames kept per data process (a small dataset is decoded once)
    device: str = "auto"
    # Matrix products in bfloat16 under autocast (the weights, the optimiser and the losses
    # stay float32): "auto" where the device multiplies bfloat16 natively (a CUDA GPU with
    # bf16, a CPU with AMX or AVX512-BF16), "bf16" or "fp32" to choose.
    precision: str = "auto"
    compile: bool = False  # torch.compile the loss (minutes of compilation before the first step)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {tuple(STAGES)}, not {self.stage!r}")
        if self.scheduler not in ("constant", "cosine"):
            raise ValueError(f"scheduler must be constant or cosine, not {self.scheduler!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if isinstance(self.intervention_weight, bool) or not isinstance(self.intervention_weight, int):
            raise ValueError(f"intervention_weight must be an integer >= 0, not {self.intervention_weight!r}")
        if self.intervention_weight < 0:
            raise ValueError(f"intervention_weight must be an integer >= 0, not {self.intervention_weight}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, not {self.compile!r}")


def load_config(stage: str, path: str | Path | None = None, **overrides) -> TrainConfig:
    """The stage's paper defaults, then the YAML file's values, then ``overrides`` (not None)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}

    def refuse_unknown(settings, where: str) -> None:
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"{where}unknown settings {unknown}")

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {tuple(STAGES)}, not {stage!r}")
    values = {"stage": stage, **STAGES[stage].defaults}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        refuse_unknown(data, f"{path}: ")
        values.update(data)
    refuse_unknown(overrides, "")
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["stage"] = stage
    return TrainConfig(**values)
