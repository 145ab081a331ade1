"""rotvla_train: one command per stage, a YAML config (the paper's values are the defaults),
single GPU, CPU, or many GPUs with torchrun.

    rotvla_train stage1 --config config/train/stage1.yaml --dataset DATA --output runs/lam
    rotvla_train stage2 --config config/train/stage2.yaml --dataset DATA --lam-checkpoint runs/lam/last \\
        --output runs/pre
    rotvla_train stage3 --config config/train/stage3.yaml --dataset DATA --lam-checkpoint runs/lam/last \\
        --init-checkpoint runs/pre/last --output runs/ft
    torchrun --nproc-per-node 8 -m rotvla_ros.train.cli stage2 ...      (DistributedDataParallel)

``--resume`` continues a run from <output>/last. The checkpoint of stages II and III is a
policy directory: ``rotvla_ctl load runs/ft/last`` swaps it into a running policy node.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from ..data.lerobot_dataset import DatasetFormatError
from ..policy.checkpoint import CheckpointError
from .config import TrainConfig, load_config
from .stages import STAGES
from .trainer import Trainer


def parse(argv=None) -> tuple[TrainConfig, bool]:
    """The run's config (and whether to resume) from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--config", help="YAML file (config/train/<stage>.yaml)")
    parser.add_argument(
        "--dataset",
        action="append",
        help="a LeRobot v3 dataset directory; repeat for a mixture of equal weights (weights and "
        "camera mappings: the config's dataset list)",
    )
    parser.add_argument("--output")
    parser.add_argument("--preset", help="rotvla-1.7b or tiny")
    parser.add_argument("--lam-checkpoint")
    parser.add_argument("--init-checkpoint")
    parser.add_argument("--dino-path", help="stage1: a local DINOv2 directory (HF format)")
    parser.add_argument("--vlm-path", help="stage2: a local InternVL3.5 directory with its tokenizer (HF format)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, help="the whole step's batch, over all processes")
    parser.add_argument("--micro-batch-size", type=int, help="rows per forward/backward (gradient accumulation)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--save-every", type=int)
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--device")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting of the config (YAML value), e.g. --set latent_planner=false",
    )
    parser.add_argument("--resume", action="store_true", help="continue from <output>/last")
    args = parser.parse_args(argv)
    # Every option but these four is a setting of the config by the same name.
    flags = {k: v for k, v in vars(args).items() if k not in ("stage", "config", "set", "resume")}
    if args.dataset and len(args.dataset) == 1:
        flags["dataset"] = args.dataset[0]
    overrides = {key: value for key, value in flags.items() if value is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            parser.error(f"--set {item!r}: KEY=VALUE expected")
        if flags.get(key) is not None:  # (a repeated --set: the last one wins)
            parser.error(f"{key} is set twice: by --{key.replace('_', '-')} and by --set {item}")
        overrides[key] = yaml.safe_load(value)
    try:
        config = load_config(args.stage, args.config, **overrides)
    except ValueError as error:  # an unknown setting
        parser.error(str(error))
    if not config.dataset or not config.output:
        parser.error("--dataset and --output are needed (or set them in the config)")
    return config, args.resume


def main(argv=None) -> int:
    config, resume = parse(argv)
    try:
        trainer = Trainer(config, resume=resume)
    except (DatasetFormatError, CheckpointError, ValueError, OSError) as error:  # the data or a file given: one line
        print(f"rotvla_train: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    if trainer.step:
        print(f"[{config.stage}] resuming at step {trainer.step}", flush=True)
    try:
        trainer.run()
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
