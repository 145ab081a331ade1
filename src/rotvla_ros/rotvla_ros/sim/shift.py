"""Domain shift for evaluation: the cell drawn with a table, background, lighting and
distractor objects that no demonstration saw (section 4.3 of the paper: new backgrounds and
distractors on the ARX R5 tasks). ROS-free.

A shift is a set of kinds (``SHIFT_KINDS``); ``shifted_look`` draws each one from the
episode's seed on a random stream of its own, so that the task's scene (object poses and
colours) of a seed is the same with and without the shift and two evaluations pair seed by
seed. Demonstrations are recorded with ``STANDARD_LOOK`` only. Light: numpy alone (the launch
file checks ``shift:=`` with ``parse_shift``).

- ``table``: another builtin texture (checker, gradient or flat), colours at least
  ``MIN_COLOUR_CHANGE`` from the standard brown in RGB, another repeat.
- ``background``: a skybox gradient where the standard cell shows black.
- ``lighting``: 1-3 lights of other positions, directions, strengths and tints.
- ``distractors``: 1-3 loose objects (spheres, cylinders, capsules, ellipsoids, never the
  tasks' cubes or cups) in random colours, on the table among the task's objects, at least
  ``DISTRACTOR_CLEARANCE`` from each of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Light:
    position: tuple[float, float, float]
    direction: tuple[float, float, float]
    diffuse: tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """What the cell looks like apart from the robot and the task's objects: the table's
    texture, the lights, the background (None: black) and extra world bodies (distractors).
    Demonstrations are all recorded with ``STANDARD_LOOK``; ``shifted_look`` draws others."""

    table_texture: str = "checker"  # MuJoCo's builtin 2D textures: checker, gradient, flat
    table_rgb: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.55, 0.45, 0.35), (0.5, 0.4, 0.3))
    table_repeat: int = 6
    lights: tuple[Light, ...] = (
        Light((0.3, 0.0, 1.5), (0.0, 0.0, -1.0), (0.8, 0.8, 0.8)),
        Light((-0.5, 0.5, 1.0), (0.5, -0.3, -1.0), (0.3, 0.3, 0.3)),
    )
    background: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # a skybox gradient
    bodies_xml: str = ""


STANDARD_LOOK = Look()


SHIFT_KINDS = ("table", "background", "lighting", "distractors")
SHIFT_STREAM = 0x5F1F7  # mixed with the seed: the shift's draws never touch the scene's
MIN_COLOUR_CHANGE = 0.35
DISTRACTOR_CLEARANCE = 0.11  # m, from any task object's start (a cabinet: CABINET_CLEARANCE)
CABINET_CLEARANCE = 0.17
DISTRACTOR_AREA = ((0.18, 0.52), (-0.38, 0.38))  # x, y ranges on the table (world, m)
DISTRACTOR_SHAPES = ("sphere", "cylinder", "capsule", "ellipsoid")


def parse_shift(text: str) -> frozenset[str]:
    """``"all"``, ``"none"``/``""`` or a comma-separated list of ``SHIFT_KINDS``."""
    words = {word.strip() for word in text.split(",") if word.strip()}
    if words <= {"none"}:
        return frozenset()
    if words == {"all"}:
        return frozenset(SHIFT_KINDS)
    unknown = sorted(words - set(SHIFT_KINDS))
    if unknown:
        raise ValueError(f"unknown shift {', '.join(unknown)}: use all, none or any of {', '.join(SHIFT_KINDS)}")
    return frozenset(words)


def shift_argument(text: str) -> str:
    """An argparse type: the shift's words in their canonical form (``describe``)."""
    try:
        return describe(parse_shift(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def describe(kinds: Iterable[str]) -> str:
    """The canonical words of a shift: "none", or its kinds in ``SHIFT_KINDS``' order."""
    kinds = [kind for kind in SHIFT_KINDS if kind in set(kinds)]
    return ",".join(kinds) if kinds else "none"


def _colour(rng: np.random.Generator, away_from: Iterable[np.ndarray] = ()) -> tuple[float, float, float]:
    away_from = list(away_from)
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, 3)
        if all(np.linalg.norm(colour - other) >= MIN_COLOUR_CHANGE for other in away_from):
            break
    return tuple(float(c) for c in colour)


def _table(rng: np.random.Generator) -> dict:
    standard = [np.asarray(c) for c in STANDARD_LOOK.table_rgb]
    first = _colour(rng, standard)
    second = _colour(rng, standard + [np.asarray(first)])
    return {
        "table_texture": str(rng.choice(["checker", "gradient", "flat"])),
        "table_rgb": (first, second),
        "table_repeat": int(rng.choice([2, 3, 4, 10, 14])),
    }


def _background(rng: np.random.Generator) -> dict:
    return {"background": (_colour(rng, [np.zeros(3)]), _colour(rng))}


def _lighting(rng: np.random.Generator) -> dict:
    lights = []
    for _ in range(int(rng.integers(1, 4))):
        position = np.array([rng.uniform(-0.6, 1.0), rng.uniform(-0.9, 0.9), rng.uniform(0.6, 1.8)])
        target = np.array([rng.uniform(0.1, 0.5), rng.uniform(-0.3, 0.3), 0.0])
        direction = (target - position) / np.linalg.norm(target - position)
        tint = rng.uniform(0.6, 1.0, 3)
        strength = rng.uniform(0.25, 1.0)
        lights.append(Light(tuple(position), tuple(direction), tuple(strength * tint / tint.max())))
    return {"lights": tuple(lights)}


def _distractors(rng: np.random.Generator, objects: Mapping[str, np.ndarray]) -> dict:
    taken = [
        (np.asarray(p)[:2], CABINET_CLEARANCE if name == "cabinet" else DISTRACTOR_CLEARANCE)
        for name, p in objects.items()
    ]
    bodies = []
    for index in range(int(rng.integers(1, 4))):
        for _ in range(200):  # rejection sampling; a crowded table gets fewer
            xy = np.array([rng.uniform(*DISTRACTOR_AREA[0]), rng.uniform(*DISTRACTOR_AREA[1])])
            if all(np.linalg.norm(xy - other) >= clearance for other, clearance in taken):
                break
        else:
            continue
        taken.append((xy, DISTRACTOR_CLEARANCE))
        shape = str(rng.choice(DISTRACTOR_SHAPES))
        radius = rng.uniform(0.012, 0.025)
        sizes, half_height = {  # MuJoCo's size of the shape; how high its centre stands
            "sphere": ([radius], radius),
            "cylinder": ([radius, radius * rng.uniform(0.6, 1.6)], None),
            "capsule": ([0.7 * radius, radius], 1.7 * radius),
            "ellipsoid": ([radius, 0.7 * radius, 1.3 * radius], 1.3 * radius),
        }[shape]
        half_height = sizes[1] if half_height is None else half_height
        size = " ".join(f"{v:.4f}" for v in sizes)
        rgba = " ".join(f"{c:.3f}" for c in _colour(rng)) + " 1"
        bodies.append(
            f'<body name="distractor{index}" pos="{xy[0]:.4f} {xy[1]:.4f} {half_height + 1e-3:.4f}">'
            f'<freejoint name="distractor{index}"/><geom type="{shape}" size="{size}" rgba="{rgba}" mass="0.05" '
            f'friction="1 0.02 0.002" condim="4"/></body>'
        )
    return {"bodies_xml": "\n".join(bodies)}


def shifted_look(kinds: Iterable[str], seed: int, objects: Mapping[str, np.ndarray]) -> Look:
    """The look of episode ``seed`` under the shift ``kinds``; ``objects``: the task's named
    start positions (world, m), which distractors keep clear of."""
    kinds = frozenset(kinds)
    look = STANDARD_LOOK
    for number, kind in enumerate(SHIFT_KINDS):
        if kind not in kinds:
            continue
        rng = np.random.default_rng([int(seed), SHIFT_STREAM, number])  # each kind its own stream
        draw = {
            "table": _table,
            "background": _background,
            "lighting": _lighting,
            "distractors": lambda stream: _distractors(stream, objects),
        }[kind]
        look = replace(look, **draw(rng))
    return look
