"""Does a Stage III checkpoint's latent planner help its actions? (issue 27 item 6: when the
method loses, find out why.) On frames of a dataset (held out from its Stage III: e.g. the
perturbed experts' video), with the frozen Stage I LAM's latent actions of each frame's future
as the reference plan:

- plan error at inference: the jointly denoised plan (projected onto SO(n)) against the
  LAM's plan of what did happen next, relative to the error of another frame's plan (1.0: the
  planner knows no more than chance; 0: it foresees the LAM's latents);
- action error (normalised, MSE against the recorded actions) when the plan is denoised
  jointly (as served), when the reference plan is forced along the flow (teacher forcing:
  the actions see the plan of what did happen), and when another frame's plan is forced (a
  wrong plan): actions that ignore the plan score the same in all three;
- attention of the action tokens in each expert block at three flow times: the share that
  goes to the plan tokens, the vision-language prefix, and the action tokens themselves.

Usage: python benchmarks/bench_planner.py CHECKPOINT --lam LAM --dataset DATASET [--frames 64]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402

from rotvla_ros.data.mixture import DatasetMixture, MixtureSource  # noqa: E402
from rotvla_ros.model import action_expert  # noqa: E402
from rotvla_ros.model.flow_matching import interpolate  # noqa: E402
from rotvla_ros.model.so_n import project_to_so_n  # noqa: E402
from rotvla_ros.policy.checkpoint import checkpoint_id, load_lam  # noqa: E402
from rotvla_ros.policy.policy import RotVLAPolicy  # noqa: E402
from rotvla_ros.train.latent_labels import latent_labels, plan_rows  # noqa: E402

FLOW_TIMES = (0.9, 0.5, 0.1)


@contextlib.contextmanager
def attention_recorder(plan_tokens: int, records: list):
    """Every expert block's attention computed in the open: per call, the action tokens' mean
    share of attention on (prefix, plan, actions)."""
    fused = action_expert.F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, h, T, N + T)
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
            )
        weights = scores.softmax(-1)
        tokens = q.shape[2]
        prefix = k.shape[2] - tokens
        actions = weights[:, :, plan_tokens:]  # (B, h, H, N + T): the action tokens' rows
        if actions.shape[2]:
            records.append(
                (
                    float(actions[..., :prefix].sum(-1).mean()),
                    float(actions[..., prefix : prefix + plan_tokens].sum(-1).mean()),
                    float(actions[..., prefix + plan_tokens :].sum(-1).mean()),
                )
            )
        return weights @ v

    action_expert.F.scaled_dot_product_attention = recording
    try:
        yield
    finally:
        action_expert.F.scaled_dot_product_attention = fused


@torch.no_grad()
def denoise(model, cache, noise: list[torch.Tensor], forced_plan: torch.Tensor | None) -> list[torch.Tensor]:
    """The served Euler integration; with ``forced_plan`` (B, K, n*n) the plan is not integrated
    but set, at every step, to where the flow puts that plan at that time."""
    xs = [x.clone() for x in noise]
    steps = model.config.flow.num_steps
    for step in range(steps):
        t = torch.full((xs[0].shape[0],), 1.0 - step / steps)
        if forced_plan is not None:
            xs[0] = interpolate(forced_plan, noise[0], t)[0]
        plan_v, action_v = model.expert(xs[0], xs[1], t, cache)
        xs = [xs[0] + (-1.0 / steps) * plan_v.float(), xs[1] + (-1.0 / steps) * action_v.float()]
    return xs


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--lam", required=True, help="the frozen Stage I LAM the checkpoint was trained with")
    parser.add_argument("--dataset", required=True, help="a LeRobot v3 dataset in the checkpoint's layout")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--stride", type=int, default=5, help="the training run's frame_stride")
    parser.add_argument("--latent-camera", default="head")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    policy = RotVLAPolicy.from_pretrained(args.checkpoint, device="cpu", dtype="float32")
    model, config = policy.model, policy.model.config
    if not config.plan_tokens:
        sys.exit(f"{args.checkpoint} has no latent planner")
    lam = load_lam(Path(args.lam)).eval()
    mixture = DatasetMixture(
        [MixtureSource(args.dataset)],
        views=tuple(config.camera_names),
        action_names=tuple(config.action_names),
        latent_camera=args.latent_camera,
        action_horizon=config.action_horizon,
        image_size=config.image_size,
    )
    part = mixture.parts[0]
    labels = latent_labels(part, lam, checkpoint_id(Path(args.lam)), args.latent_camera, args.stride)
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(mixture), size=min(args.frames, len(mixture)), replace=False)
    others = rng.permutation(rows)
    plan_of = lambda row: torch.from_numpy(  # noqa: E731 - (1, K, n*n): the LAM's plan of a frame
        labels[plan_rows(part, int(row), args.stride, config.latent_horizon)]
    ).reshape(1, config.plan_tokens, -1)
    errors = {"joint": [], "forced": [], "wrong": []}
    plan_error, chance_error, attention = [], [], {t: [] for t in FLOW_TIMES}
    for row, other in zip(rows, others):
        item = mixture[int(row)]
        pixels, ids, mask, state = policy.preprocess(
            {"images": item["images"], "instruction": item["instruction"], "state": item["state"]}
        )
        cache = model.encode_prefix(pixels, ids, mask, state)
        truth = torch.from_numpy(policy.normalizer.normalize(item["actions"]).astype(np.float32))[None]  # (1, H, A)
        noise = model.initial_noise(1, "cpu")
        reference, wrong = plan_of(row), plan_of(other)
        for name, forced in (("joint", None), ("forced", reference), ("wrong", wrong)):
            plan, actions = denoise(model, cache, noise, forced)
            errors[name].append(float(((actions - truth) ** 2).mean()))
            if forced is None:
                n = config.latent_dim
                projected = project_to_so_n(plan.unflatten(-1, (n, n))).flatten(-2)
                plan_error.append(float((projected - reference).norm()))
                chance_error.append(float((wrong - reference).norm()))
        for t in FLOW_TIMES:  # the action tokens' attention, on the reference plan at time t
            records: list = []
            time_ = torch.full((1,), t)
            with attention_recorder(config.plan_tokens, records):
                model.expert(
                    interpolate(reference, noise[0], time_)[0], interpolate(truth, noise[1], time_)[0], time_, cache
                )
            attention[t].append(records)
    rows_out = [
        ["plan error at inference / another frame's plan", f"{np.mean(plan_error) / np.mean(chance_error):.3f}"],
        *[
            [f"action MSE, plan {name}", f"{np.mean(v):.4f} +- {np.std(v) / np.sqrt(len(v)):.4f}"]
            for name, v in errors.items()
        ],
    ]
    for t in FLOW_TIMES:
        per_block = np.mean(np.array(attention[t]), axis=0)  # (blocks, 3)
        for block, (prefix, plan, actions) in enumerate(per_block):
            rows_out.append(
                [
                    f"t={t} block {block}: action tokens' attention",
                    f"prefix {prefix:.2f} plan {plan:.2f} actions {actions:.2f}",
                ]
            )
    print_table(
        f"latent planner of {Path(args.checkpoint).name} on {Path(args.dataset).name} ({len(rows)} frames)",
        ["measure", "value"],
        rows_out,
        [f"LAM {args.lam}, stride {args.stride}, plan {config.plan_tokens} tokens of SO({config.latent_dim})"],
    )


if __name__ == "__main__":
    main()
