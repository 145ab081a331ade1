"""Write a randomly initialised checkpoint of a preset (the embedded default for simulation,
benchmarks, tests): python -m rotvla_ros.policy.init_checkpoint DIR [--preset tiny] [--seed 0]"""

from __future__ import annotations

import argparse

import torch

from ..model.config import PRESETS
from .policy import RotVLAPolicy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split(":")[0])
    parser.add_argument("directory")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    checkpoint_id = RotVLAPolicy.from_config(PRESETS[args.preset](), device="cpu").save_pretrained(args.directory)
    print(f"wrote {args.directory} ({checkpoint_id}, preset {args.preset}, random weights)")


if __name__ == "__main__":
    main()
