"""Policy latency per chunk, eager (the reference path) and the fast path, beside a peer.

Rows: the tiny preset on the CPU (eager and compile); on a GPU, rotvla-1.7b with random
weights, bf16, three 224x224 views, 10 flow steps, batch 1 (eager and graph: the denoising
loop replayed as one CUDA graph), and a naive peer on the same inputs: LeRobot's pi0 when it
is installed, otherwise a plain transformers InternVL forward of the same dimensions plus a
24-layer DiT that re-reads the whole prefix at every step. Timings are CUDA events (one sync
per chunk). Targets (issue 16): rotvla-1.7b <= 30 ms p50 per chunk on an H100/H200, p99
within 10% of p50, >= 1.5x faster than the peer.

Usage: python benchmarks/bench_policy_latency.py [--runs N] [--device D] [--preset P] [--output FILE]
(benchmarks/gpu_measurements.sh runs it on a GPU machine and keeps the table).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentiles, print_table  # noqa: E402

from rotvla_ros.model.config import PRESETS, RotVLAConfig  # noqa: E402
from rotvla_ros.model.rotvla import RotVLA, open_zero_gates  # noqa: E402
from rotvla_ros.model.vlm import internvl_config_from_dims  # noqa: E402
from rotvla_ros.policy import RotVLAPolicy  # noqa: E402
from rotvla_ros.policy.normalization import ActionNormalizer  # noqa: E402
from rotvla_ros.policy.policy import DTYPES, StageTimer  # noqa: E402

INSTRUCTION = "put the yellow cup into the red cup, then the green cup into the yellow cup"
HEADER = ["model", "device", "dtype", "path", "runs", "prefix", "one denoise step", "chunk", "vs peer", "GPU GiB"]


def build_model(config: RotVLAConfig, device: str) -> RotVLA:
    torch.manual_seed(0)
    with torch.device(device):  # random weights made where they run: 1.7B on the CPU takes minutes
        return open_zero_gates(RotVLA(config))  # chunks that depend on the prefix: paths comparable


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.startswith("cuda") else "-"


def measure_policy(model: RotVLA, device: str, dtype: str, mode: str, runs: int) -> tuple[list, dict]:
    """One row: p50 / p99 of each stage, ms. Returns the row and the chunks of seeds 0..2."""
    reset_peak(device)
    identity = ActionNormalizer.identity(model.config.action_names)
    state = identity if model.config.use_state else None
    policy = RotVLAPolicy(model, identity, device=device, dtype=dtype, inference_mode=mode, state_normalizer=state)
    started = time.perf_counter()
    policy.warmup(passes=3)
    prepare = time.perf_counter() - started
    observation = policy.dummy_observation(INSTRUCTION)
    chunks = {seed: policy.predict(observation, seed=seed) for seed in range(3)}
    timings = [policy.predict(observation, seed=i).timings for i in range(runs)]
    steps = model.config.flow.num_steps
    columns: list[list[float] | None] = [None, None, [t["total"] for t in timings]]
    if "vl_prefix" in timings[0]:  # compile: the prefix runs inside the compiled chunk, not timed apart
        columns[0] = [t["vl_prefix"] for t in timings]
        if mode == "eager":
            columns[1] = [t[f"denoise_step_{s}"] for t in timings for s in range(steps)]
        else:  # one stage for the whole loop: its mean step
            columns[1] = [t["denoise"] / steps for t in timings]
    cells = []
    for values in columns:
        p50, p99, _ = percentiles(values) if values else (None, None, None)
        cells.append(f"{p50:.2f} / {p99:.2f}" if values else "in the chunk")
    totals = [t["total"] for t in timings]
    row = [model.config.preset, device, dtype, f"{mode} (ready in {prepare:.1f} s)", runs, *cells, "", peak_gib(device)]
    return row, {"chunks": chunks, "p50": float(np.median(totals)), "p99": float(np.percentile(totals, 99))}


class NaiveDiT(torch.nn.Module):
    """The naive action head: pre-norm blocks of self-attention over the action tokens and
    cross-attention to the whole prefix, its keys/values recomputed at every step."""

    def __init__(self, config: RotVLAConfig, context: int):
        super().__init__()
        dim, heads = config.expert.dim, config.expert.num_heads
        self.inp = torch.nn.Linear(config.action_dim, dim)
        self.context = torch.nn.Linear(context, dim)
        self.time = torch.nn.Linear(1, dim)
        layer = torch.nn.TransformerDecoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerDecoder(layer, config.expert.num_layers)
        self.out = torch.nn.Linear(dim, config.action_dim)

    def forward(self, actions, prefix, t):  # (B, H, A), (B, N, C), (B,) -> (B, H, A)
        x = self.inp(actions) + self.time(t[:, None, None])
        return self.out(self.blocks(x, self.context(prefix)))


def measure_peer(config: RotVLAConfig, device: str, dtype: torch.dtype, runs: int) -> tuple[list, float, str]:
    """The peer on the same inputs: LeRobot's pi0 if importable, else InternVL + naive DiT."""
    try:
        import lerobot.policies.pi0  # noqa: F401

        note = "LeRobot is installed, but its pi0 is not wired into this benchmark yet: the naive peer ran."
    except ImportError:
        note = (
            f"LeRobot is not installed here: the peer is a plain transformers InternVL forward plus a naive "
            f"{config.expert.num_layers}-layer DiT of the same dimensions."
        )
    from transformers import InternVLModel

    reset_peak(device)
    torch.manual_seed(0)
    image_token = 257
    with torch.device(device):
        vlm = InternVLModel(internvl_config_from_dims(config.vlm, image_token)).to(dtype).eval()
        head = NaiveDiT(config, vlm.config.text_config.hidden_size).to(dtype).eval()
    grid = config.image_size // config.vlm.vision.patch_size
    image_tokens = int(grid * config.vlm.downsample_ratio) ** 2 * len(config.camera_names)
    text = torch.randint(1, image_token, (1, 24), device=device)
    ids = torch.cat([torch.full((1, image_tokens), image_token, device=device), text], dim=1)
    views = len(config.camera_names)
    pixels = torch.rand(views, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    steps = config.flow.num_steps

    def chunk() -> tuple[float, float, float]:
        timer = StageTimer(torch.device(device))
        prefix = vlm(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)).last_hidden_state
        timer.lap("prefix")
        x = torch.randn(1, config.action_horizon, config.action_dim, device=device, dtype=dtype)
        for step in range(steps):
            t = torch.full((1,), 1.0 - step / steps, device=device, dtype=dtype)
            x = x - head(x, prefix, t) / steps
        x.float().cpu()
        timer.lap("denoise")
        timings = timer.timings()
        return timings["prefix"], timings["denoise"] / steps, timings["total"]

    with torch.inference_mode():
        for _ in range(3):
            chunk()
        samples = np.array([chunk() for _ in range(runs)])
    cells = []
    for column in samples.T:
        p50, p99, _ = percentiles(column)
        cells.append(f"{p50:.2f} / {p99:.2f}")
    dtype_name = str(dtype).removeprefix("torch.")
    row = ["naive peer", device, dtype_name, "eager", runs, *cells, "1.00x", peak_gib(device)]
    return row, float(np.median(samples[:, 2])), note


def agreement(reference: dict, fast: dict) -> float:
    """Largest difference between the two paths' chunks (same seeds), relative to the largest action."""
    worst = 0.0
    for seed, chunk in reference["chunks"].items():
        scale = max(1.0, float(np.abs(chunk.actions).max()))
        worst = max(worst, float(np.abs(chunk.actions - fast["chunks"][seed].actions).max()) / scale)
    return worst


def main():
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--preset", help="default: rotvla-1.7b on a GPU, tiny on the CPU")
    parser.add_argument("--dtype", help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--fast", help="the fast path's mode; default: graph on a GPU, compile on the CPU")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--output", help="also write the table to this file")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    preset = args.preset or ("rotvla-1.7b" if gpu else "tiny")
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    config = PRESETS[preset]()
    model = build_model(config, args.device)
    print(f"[bench] {preset} built on {args.device}", file=sys.stderr, flush=True)
    eager, eager_stats = measure_policy(model, args.device, dtype, "eager", args.runs)
    rows, notes = [eager], []
    fast_mode = args.fast or ("graph" if gpu else "compile")
    print(f"[bench] eager measured; {fast_mode} next", file=sys.stderr, flush=True)
    try:
        fast, fast_stats = measure_policy(model, args.device, dtype, fast_mode, args.runs)
        rows.append(fast)
        notes.append(
            f"{preset}: the fast path's chunks vs eager's (seeds 0-2), largest difference relative to the "
            f"largest action: {agreement(eager_stats, fast_stats):.1e}; fast path p99/p50: "
            f"{fast_stats['p99'] / fast_stats['p50']:.2f}."
        )
    except Exception as error:  # eager's and the peer's rows are still worth their run
        fast, fast_stats = None, None
        notes.append(f"{fast_mode} path failed: {type(error).__name__}: {error}")
    del model
    if gpu:
        torch.cuda.empty_cache()
    else:
        notes.append("rotvla-1.7b on a GPU: not measured here (no CUDA device): benchmarks/gpu_measurements.sh.")
    if not args.no_peer:
        print("[bench] peer next", file=sys.stderr, flush=True)
        try:
            peer, peer_p50, peer_note = measure_peer(config, args.device, DTYPES[dtype], args.runs)
            for row, stats in ((eager, eager_stats), (fast, fast_stats)):
                if row is not None:
                    row[8] = f"{peer_p50 / stats['p50']:.2f}x"
            rows.append(peer)
            notes.append(peer_note + " vs peer: the peer's p50 chunk over this row's (above 1: faster).")
        except Exception as error:  # the peer is a reference point: its failure keeps our rows
            notes.append(f"peer not measured: {type(error).__name__}: {error}")
    notes.append(
        "p50 / p99 ms, three views, batch 1. prefix: the vision-language backbone; one denoise step: "
        "eager, each step timed; graph/compile, the loop's mean step; chunk: observation in, actions "
        "on the host. ready in: warm-up with the capture/compile."
    )
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_table("Policy latency per chunk (ms, p50 / p99)", HEADER, rows, notes)
    print(table.getvalue())
    if args.output:
        Path(args.output).write_text(table.getvalue())


if __name__ == "__main__":
    main()
