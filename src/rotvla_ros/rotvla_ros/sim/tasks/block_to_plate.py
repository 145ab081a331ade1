"""Task 1 of the paper's real-world set (appendix D), single arm (left): put the block on the
plate. Objects start between the arms, never under a resting arm: from the head camera an
arm's links would hide them (a third of the scenes did, when the block could start under the
left arm)."""

from __future__ import annotations

import numpy as np

from ..bodies import body_position, body_speed
from ..moves import PickAndPlace
from ..scene import vec
from .base import BLOCK_HALF, Task, TaskScene, block_xml, jitter_colour, register_task

PLATE_RADIUS, PLATE_HALF_HEIGHT = 0.06, 0.004


@register_task
class BlockToPlate(Task):
    name = "block_to_plate"
    instruction = "put the block on the plate"
    arms = ("left",)
    env_id = "rotvla/BlockToPlate-v0"

    def sample(self, rng):
        block = np.array([rng.uniform(0.30, 0.38), rng.uniform(0.16, 0.26), BLOCK_HALF])
        plate = np.array([rng.uniform(0.28, 0.36), rng.uniform(0.0, 0.08), PLATE_HALF_HEIGHT])
        xml = "\n".join(
            [
                block_xml("block", block, jitter_colour(rng, (0.85, 0.15, 0.1))),
                f'<body name="plate" pos="{vec(plate)}">'
                f'<geom type="cylinder" size="{PLATE_RADIUS} {PLATE_HALF_HEIGHT}" '
                f'rgba="{jitter_colour(rng, (0.9, 0.9, 0.92), 0.05)}"/></body>',
            ]
        )
        return TaskScene(self.name, self.instruction, xml, self.arms, {"block": block, "plate": plate})

    def success(self, model, data):
        block, plate = body_position(model, data, "block"), body_position(model, data, "plate")
        on_plate = np.linalg.norm(block[:2] - plate[:2]) < PLATE_RADIUS - 0.01
        resting = block[2] < 2 * PLATE_HALF_HEIGHT + BLOCK_HALF + 0.005 and body_speed(model, data, "block") < 0.02
        return bool(on_plate and resting)

    def moves(self, world):
        plate = world.scene.positions["plate"]
        return [PickAndPlace("left", "block", plate, BLOCK_HALF + 0.003, 0.045, PLATE_RADIUS - 0.015, 0.03)]
