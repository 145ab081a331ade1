"""Training throughput and memory per process: samples/s and peak memory of each stage, for
the given presets, on the reference path (float32, eager) and the fast one (bf16 autocast
where the device has bf16 units, a compiled loss), with and without activation checkpointing,
and what the latent-label cache saves (the frozen LAM labels the dataset once, instead of
every step's clips).

Each configuration runs in a process of its own, so that its peak memory (resident set on
the CPU, the allocator's peak on a GPU) is its own. Stage I runs first and its LAM labels
Stages II and III. Usage:
    python benchmarks/bench_training.py --dataset datasets/block_to_plate [--presets tiny,sim]
        [--steps 10] [--batch-size 8] [--device cpu|cuda] [--paths reference,fast] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

WARM_STEPS = 2
PATHS = {"reference": dict(precision="fp32", compile=False), "fast": dict(precision="auto", compile=True)}


def measure(args: argparse.Namespace) -> dict:
    """In the child process: build the trainer, warm up, time ``steps`` steps."""
    import resource

    import torch
    import yaml

    from rotvla_ros.train.config import load_config
    from rotvla_ros.train.trainer import Trainer

    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = load_config(
        args.stage,
        REPO / "config" / "train" / f"{args.stage}.yaml",
        dataset=args.dataset,
        output=args.output,
        preset=args.preset,
        lam_checkpoint=args.lam_checkpoint or None,
        steps=WARM_STEPS + args.steps,
        batch_size=args.batch_size,
        warmup_steps=0,
        save_every=10**9,
        log_every=1,
        device=args.device,
        num_workers=0,
        activation_checkpointing=args.activation_checkpointing,
        latent_cache_dir=args.cache,
        **PATHS[args.path],
        **extra,
    )
    started = time.perf_counter()
    trainer = Trainer(config)
    built = time.perf_counter() - started
    trainer.run(steps=WARM_STEPS)  # a compiled loss compiles here
    warm = time.perf_counter() - started - built
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ends = []
    started = time.perf_counter()
    # The last step's log comes before its checkpoint is written: the save is not timed.
    trainer.run(steps=args.steps, on_log=lambda record: ends.append(time.perf_counter()))
    seconds = ends[-1] - started
    if trainer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    labelled = sum(len(labels) for labels in trainer.labels) if trainer.labels is not None else 0
    return {
        "samples_per_s": args.steps * args.batch_size / seconds,
        "peak": peak,
        "built": built,
        "warm": warm,
        "frames": labelled,
        "bf16": trainer.autocast,
    }


def child(stage: str, preset: str, output: Path, args, **options) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--stage",
        stage,
        "--preset",
        preset,
        "--output",
        str(output),
        *("--path", options.get("path", "reference")),
        *("--dataset", args.dataset, "--steps", str(args.steps), "--batch-size", str(args.batch_size)),
        *("--device", args.device, "--cache", options.get("cache", "")),
        *("--lam-checkpoint", options.get("lam", "")),
        *(["--activation-checkpointing"] if options.get("checkpointing") else []),
        *(x for item in args.set for x in ("--set", item)),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{stage} {preset}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True, help="a LeRobot v3 dataset (rotvla_convert's output)")
    parser.add_argument("--presets", default="tiny,sim")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every stage's config")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="reference", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    parser.add_argument("--lam-checkpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--activation-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows, notes = [], []
    gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for preset in args.presets.split(","):
            lam_run = tmp / preset / "lam"
            lam_result = child("stage1", preset, lam_run, args)  # the LAM the other rows take, on the reference path
            lam = str(lam_run / "last")
            cache = tmp / preset / "labels"
            for path in args.paths.split(","):
                runs = [("stage1", False), ("stage2", False), ("stage3", False)]
                if path == "reference":
                    runs.append(("stage3", True))
                for stage, checkpointing in runs:
                    result = lam_result
                    if (stage, path) != ("stage1", "reference"):
                        result = child(
                            stage,
                            preset,
                            tmp / preset / path / f"{stage}{'-ckpt' if checkpointing else ''}",
                            args,
                            lam=lam,
                            cache=str(cache),
                            checkpointing=checkpointing,
                            path=path,
                        )
                    rows.append(
                        [
                            preset,
                            stage,
                            f"{path} ({'bf16' if result['bf16'] else 'fp32'})",
                            "on" if checkpointing else "off",
                            f"{result['samples_per_s']:.1f}",
                            gib(result["peak"]),
                            f"{result['warm']:.0f}",
                        ]
                    )
            # The label cache: the dataset labelled once (a cold cache), then read (a warm one).
            cold = child("stage2", preset, tmp / preset / "cold", args, lam=lam, cache=str(tmp / preset / "fresh"))
            warm = child("stage2", preset, tmp / preset / "warm", args, lam=lam, cache=str(tmp / preset / "fresh"))
            per_frame = (cold["built"] - warm["built"]) / cold["frames"]
            notes.append(
                f"{preset}: labelling the {cold['frames']} frames once took {cold['built'] - warm['built']:.1f} s "
                f"({per_frame * 1e3:.1f} ms a frame); labelling each step's clips instead would add ~"
                f"{per_frame * args.batch_size * 1e3:.0f} ms or more to every step of {args.batch_size} samples "
                f"(one label per sample and latent step)."
            )
    print_table(
        f"Training throughput per process ({args.device}, batch {args.batch_size}, {args.steps} timed steps)",
        ["preset", "stage", "path", "activation checkpointing", "samples/s", "peak GiB", f"first {WARM_STEPS} steps s"],
        rows,
        notes
        + [
            "Peak: the process's resident set on the CPU (the dataset's decoded frames included); "
            "on a GPU, the allocator's peak. The first steps of the fast path include compiling the loss."
        ],
    )


if __name__ == "__main__":
    main()
