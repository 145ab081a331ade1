"""Task 3 of the paper's real-world set (appendix D), both arms, in the paper's order: the
left arm puts the yellow cup into the red one, then the right arm puts the green cup into the
yellow one."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ..bodies import body_position
from ..moves import PickAndPlace
from ..scene import vec
from .base import Task, TaskScene, jitter_colour, register_task

# Cups: outer radius, height; wall and bottom 4 mm; 12 wall segments.
CUPS = {"red": (0.045, 0.070), "yellow": (0.033, 0.058), "green": (0.022, 0.046)}  # largest first
STACK_ORDER = ("red", "yellow", "green")  # bottom to top: the instruction's order
CUP_RGBA = {"green": (0.1, 0.7, 0.2), "yellow": (0.95, 0.8, 0.1), "red": (0.85, 0.1, 0.1)}


def cup_xml(name: str, position, rgba: str, base_mass: float = 0.02) -> str:
    radius, height = CUPS[name]
    wall = 0.004
    segments = 12
    half_width = radius * np.tan(np.pi / segments) + 1e-3
    lines = [
        f'<body name="{name}_cup" pos="{vec(position)}"><freejoint name="{name}_cup"/>',
        # The bottom as a box, 8 mm thick: thin cylinder-cylinder contacts let a dropped cup sink through.
        f'<geom type="box" size="{(radius - wall) * 0.7:.4f} {(radius - wall) * 0.7:.4f} 0.004" pos="0 0 0.004" '
        f'rgba="{rgba}" mass="{base_mass}"/>',
    ]
    for k in range(segments):
        angle = 2 * np.pi * k / segments
        centre = (radius - wall / 2) * np.array([np.cos(angle), np.sin(angle)])
        lines.append(
            f'<geom type="box" size="{wall / 2} {half_width:.4f} {height / 2}" pos="{vec(centre)} {height / 2}" '
            f'euler="0 0 {angle:.5f}" rgba="{rgba}" mass="0.004" friction="1.5 0.02 0.002" condim="4"/>'
        )
    lines.append("</body>")
    return "\n".join(lines)


@register_task
class CupStacking(Task):
    name = "cup_stacking"
    instruction = "put the yellow cup into the red cup, then place the green cup into the yellow cup"
    arms = ("left", "right")
    env_id = "rotvla/CupStacking-v0"
    time_limit = 60.0

    def sample(self, rng):
        positions = {
            "red": np.array([rng.uniform(0.30, 0.33), rng.uniform(-0.02, 0.02), 0.0]),
            "yellow": np.array([rng.uniform(0.28, 0.32), rng.uniform(0.28, 0.34), 0.0]),
            "green": np.array([rng.uniform(0.28, 0.32), rng.uniform(-0.34, -0.28), 0.0]),
        }
        # The red cup stands (heavy base) between the arms; the others are carried.
        xml = "\n".join(
            cup_xml(name, position, jitter_colour(rng, CUP_RGBA[name], 0.06), 0.3 if name == STACK_ORDER[0] else 0.02)
            for name, position in positions.items()
        )
        return TaskScene(self.name, self.instruction, xml, self.arms, positions)

    def success(self, model, data):
        positions = [body_position(model, data, f"{c}_cup") for c in STACK_ORDER]  # bottom first
        if positions[0][2] >= 0.01:  # the bottom cup stands on the table
            return False
        for (below, above), (low, high) in zip(pairwise(STACK_ORDER), pairwise(positions)):
            nested = np.linalg.norm(high[:2] - low[:2]) < CUPS[below][0] - CUPS[above][0] + 0.004
            if not (nested and low[2] < high[2] < low[2] + 0.03):
                return False
        return True

    def moves(self, world):
        # Each cup is pinched by its upper wall (the palm stays above the rim), carried with its
        # bottom 1.5 cm above the bottom cup's rim, lowered until its bottom is 1 cm inside the
        # rim of the cups below (so that it cannot catch on that rim), and let go.
        bottom, middle, top = STACK_ORDER
        grasp = {name: CUPS[name][1] - 0.015 for name in (middle, top)}
        carry, release = CUPS[bottom][1] + 0.015, CUPS[bottom][1] - 0.01
        return [
            PickAndPlace(
                arm,
                f"{cup}_cup",
                world.scene.positions[bottom],
                grasp[cup],
                release + grasp[cup],
                CUPS[below][0] - CUPS[cup][0] + 0.004,
                0.03,  # nested: its bottom within 3 cm of the bottom of the cup below (the task's test)
                carry + grasp[cup],
                over=f"{below}_cup",
            )
            for arm, cup, below in (("left", middle, bottom), ("right", top, middle))
        ]
