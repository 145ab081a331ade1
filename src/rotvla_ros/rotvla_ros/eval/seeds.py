"""The seeds of the simulated scenes, split once for everyone: the demonstrations are recorded
on one range, recipes, step counts and checkpoints are chosen on a validation range, and what
is reported comes from a test range no choice ever looked at. A seed fixes a scene (object
poses, and under --shift its textures, lighting and distractors), so ranges that do not overlap
are scenes no policy was trained or tuned on."""

from __future__ import annotations

VALIDATION = range(0, 1000)  # choose here (seeds 0-49 were every earlier session's evaluation)
DEMONSTRATIONS = range(1000, 10_000)  # rotvla_record: the scenes demonstrations are recorded in
TEST = range(10_000, 20_000)  # report here; never choose on it

SPLITS = {"validation": VALIDATION, "test": TEST}


def split_seeds(split: str, episodes: int, first_seed: int | None = None) -> list[int]:
    """``episodes`` seeds of ``split`` from ``first_seed`` (default: the split's first);
    ValueError when they leave the split."""
    seeds = SPLITS[split]
    first = seeds.start if first_seed is None else first_seed
    chosen = list(range(first, first + episodes))
    if not chosen or chosen[0] not in seeds or chosen[-1] not in seeds:
        raise ValueError(
            f"seeds {first}-{first + episodes - 1} are not all in the {split} range {seeds.start}-{seeds.stop - 1}"
        )
    return chosen
