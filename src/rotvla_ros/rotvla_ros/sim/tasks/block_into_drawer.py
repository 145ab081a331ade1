"""Task 2 of the paper's real-world set (appendix D), single arm (left): put the block into
the drawer, which starts open, and close it."""

from __future__ import annotations

import mujoco
import numpy as np

from ..bodies import body_position
from ..moves import CLOSED, FixedPath, PickAndPlace, Waypoint
from ..scene import vec
from .base import BLOCK_HALF, Task, TaskScene, block_xml, jitter_colour, register_task

DRAWER_TRAVEL = 0.12  # m, fully open


@register_task
class BlockIntoDrawer(Task):
    """A cabinet with a drawer that slides along x (open towards the robot), open at the start."""

    name = "block_into_drawer"
    instruction = "put the block into the drawer and close it"
    arms = ("left",)
    env_id = "rotvla/BlockIntoDrawer-v0"
    time_limit = 45.0
    INTERIOR = np.array([0.07, 0.06])  # half extents of the drawer's inside, x and y

    def sample(self, rng):
        cabinet = np.array([rng.uniform(0.44, 0.47), rng.uniform(0.14, 0.18), 0.0])
        block = np.array([rng.uniform(0.28, 0.33), rng.uniform(0.33, 0.38), BLOCK_HALF])
        wood = jitter_colour(rng, (0.55, 0.4, 0.25), 0.05)
        ix, iy = self.INTERIOR
        drawer = "\n".join(
            [
                # The drawer's frame: the centre of its floor; closed at x = 0 in the cabinet.
                f'<body name="drawer" pos="0 0 0.006"><joint name="drawer" type="slide" axis="1 0 0" '
                f'range="{-DRAWER_TRAVEL} 0" damping="8" frictionloss="0.3"/>',
                f'<geom type="box" size="{ix} {iy} 0.004" rgba="{wood}" mass="0.2"/>',
                f'<geom type="box" size="0.004 {iy} 0.02" pos="{ix} 0 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="0.006 {iy + 0.01} 0.026" pos="{-ix - 0.006} 0 0.022" rgba="{wood}" '
                'mass="0.05"/>',
                f'<geom type="box" size="{ix} 0.004 0.02" pos="0 {iy} 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="{ix} 0.004 0.02" pos="0 {-iy} 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="0.008 0.03 0.008" pos="{-ix - 0.02} 0 0.03" rgba="0.3 0.3 0.3 1" '
                'mass="0.01"/>',
                "</body>",
            ]
        )
        cabinet_xml = "\n".join(
            [
                f'<body name="cabinet" pos="{vec(cabinet)}">',
                f'<geom type="box" size="{ix + 0.01} {iy + 0.02} 0.004" pos="0 0 0.066" rgba="{wood}"/>',  # top
                f'<geom type="box" size="{ix + 0.01} 0.008 0.035" pos="0 {iy + 0.014} 0.035" rgba="{wood}"/>',
                f'<geom type="box" size="{ix + 0.01} 0.008 0.035" pos="0 {-iy - 0.014} 0.035" rgba="{wood}"/>',
                f'<geom type="box" size="0.006 {iy + 0.02} 0.035" pos="{ix + 0.016} 0 0.035" rgba="{wood}"/>',  # back
                drawer,
                "</body>",
            ]
        )
        return TaskScene(
            self.name,
            self.instruction,
            "\n".join([block_xml("block", block, jitter_colour(rng, (0.1, 0.3, 0.85))), cabinet_xml]),
            self.arms,
            {"block": block, "cabinet": cabinet},
        )

    def initialise(self, model, data, rng):
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "drawer")
        data.qpos[model.jnt_qposadr[joint]] = -rng.uniform(0.09, 0.11)

    @staticmethod
    def drawer_opening(model, data) -> float:
        """How far the drawer is open, m (0: closed)."""
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "drawer")
        return float(-data.qpos[model.jnt_qposadr[joint]])

    def success(self, model, data):
        block = body_position(model, data, "block")
        drawer = body_position(model, data, "drawer")
        inside = (np.abs(block[:2] - drawer[:2]) < self.INTERIOR - 0.005).all() and block[2] < drawer[2] + 0.04
        return bool(inside and self.drawer_opening(model, data) < 0.015)

    def moves(self, world):
        opening = self.drawer_opening(world.model, world.data)
        if opening < 0.015:  # closed already: whatever is inside stays there
            return []
        drawer = world.scene.positions["cabinet"] - np.array([opening, 0.0, 0.0])
        front = drawer[0] - self.INTERIOR[0] - 0.012  # the front panel's outer face
        push_from = np.array([front - 0.05, drawer[1], 0.035])
        tolerance = float(self.INTERIOR.min() - BLOCK_HALF)
        return [
            PickAndPlace("left", "block", drawer, BLOCK_HALF + 0.003, 0.06, tolerance, 0.045),
            FixedPath(
                [
                    Waypoint("left", push_from + [0, 0, 0.08], CLOSED, 1.2),
                    Waypoint("left", push_from, CLOSED, 1.0),
                    Waypoint("left", push_from + [opening + 0.03, 0, 0], CLOSED, 2.0),
                    # Back off at the same height first: rising at once drags the fingers along
                    # the cabinet's top edge and pulls the drawer open again.
                    Waypoint("left", push_from + [opening - 0.03, 0, 0], CLOSED, 1.0),
                    Waypoint("left", push_from + [opening - 0.03, 0, 0.08], CLOSED, 1.0),
                ]
            ),
        ]
