"""The three real-world tasks of the paper (appendix D) as MuJoCo scenes: objects placed
and coloured from a seed, an instruction, and a success detector.

- ``block_to_plate`` (left arm): put the block on the plate.

Objects start between the arms, never under a resting arm: from the head camera an arm's
links would hide them (a third of the scenes did, when the block could start under the left
arm).
- ``block_into_drawer`` (left arm): put the block into the (open) drawer and close it.
- ``cup_stacking`` (both arms), in the paper's order: the left arm puts the yellow cup into
  the red one, then the right arm puts the green cup into the yellow one.

World frame: the table top is z = 0, x points away from the robot, y to the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import mujoco
import numpy as np

from rotvla_common.tasks import TASK_SPECS

BLOCK_HALF = 0.02  # a 4 cm block: 3 px wide at 84 px from the head camera
PLATE_RADIUS, PLATE_HALF_HEIGHT = 0.06, 0.004
DRAWER_TRAVEL = 0.12  # m, fully open
# Cups: outer radius, height; wall and bottom 4 mm; 12 wall segments.
CUPS = {"red": (0.045, 0.070), "yellow": (0.033, 0.058), "green": (0.022, 0.046)}  # largest first
STACK_ORDER = ("red", "yellow", "green")  # bottom to top: the instruction's order
CUP_RGBA = {"green": (0.1, 0.7, 0.2), "yellow": (0.95, 0.8, 0.1), "red": (0.85, 0.1, 0.1)}


def _vec(values) -> str:
    return " ".join(f"{v:.6g}" for v in np.ravel(values))


def _jitter_colour(rng: np.random.Generator, rgb, amount: float = 0.08) -> str:
    colour = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 1)
    return _vec(np.r_[colour, 1.0])


def _block_xml(name: str, position, rgba: str) -> str:
    return (
        f'<body name="{name}" pos="{_vec(position)}"><freejoint name="{name}"/>'
        f'<geom type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" rgba="{rgba}" mass="0.04" '
        f'friction="1.5 0.02 0.002" condim="4"/></body>'
    )


def _cup_xml(name: str, position, rgba: str, base_mass: float = 0.02) -> str:
    radius, height = CUPS[name]
    wall = 0.004
    segments = 12
    half_width = radius * np.tan(np.pi / segments) + 1e-3
    lines = [
        f'<body name="{name}_cup" pos="{_vec(position)}"><freejoint name="{name}_cup"/>',
        # The bottom as a box, 8 mm thick: thin cylinder-cylinder contacts let a dropped cup sink through.
        f'<geom type="box" size="{(radius - wall) * 0.7:.4f} {(radius - wall) * 0.7:.4f} 0.004" pos="0 0 0.004" '
        f'rgba="{rgba}" mass="{base_mass}"/>',
    ]
    for k in range(segments):
        angle = 2 * np.pi * k / segments
        centre = (radius - wall / 2) * np.array([np.cos(angle), np.sin(angle)])
        lines.append(
            f'<geom type="box" size="{wall / 2} {half_width:.4f} {height / 2}" pos="{_vec(centre)} {height / 2}" '
            f'euler="0 0 {angle:.5f}" rgba="{rgba}" mass="0.004" friction="1.5 0.02 0.002" condim="4"/>'
        )
    lines.append("</body>")
    return "\n".join(lines)


@dataclass
class TaskScene:
    """A task drawn from a seed: its objects (MJCF) and where they start."""

    name: str
    instruction: str
    xml: str
    arms: tuple[str, ...]  # the arms the task uses
    positions: dict[str, np.ndarray]  # named start positions (world)


class Task:
    name = ""
    instruction = ""
    arms: tuple[str, ...] = ()
    time_limit = 30.0  # s of sim time an episode gets (about twice the expert's)

    def sample(self, rng: np.random.Generator) -> TaskScene:
        raise NotImplementedError

    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        raise NotImplementedError

    def initialise(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Set the start state of joints the scene cannot (a drawer's opening)."""


def body_position(model, data, name: str) -> np.ndarray:
    return data.xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)].copy()


def body_speed(model, data, name: str) -> float:
    joint = model.body_jntadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)]
    return float(np.linalg.norm(data.qvel[model.jnt_dofadr[joint] : model.jnt_dofadr[joint] + 3]))


class BlockToPlate(Task):
    name = "block_to_plate"
    instruction = TASK_SPECS[name].instruction
    arms = TASK_SPECS[name].arms

    def sample(self, rng):
        block = np.array([rng.uniform(0.30, 0.38), rng.uniform(0.16, 0.26), BLOCK_HALF])
        plate = np.array([rng.uniform(0.28, 0.36), rng.uniform(0.0, 0.08), PLATE_HALF_HEIGHT])
        xml = "\n".join(
            [
                _block_xml("block", block, _jitter_colour(rng, (0.85, 0.15, 0.1))),
                f'<body name="plate" pos="{_vec(plate)}"><geom type="cylinder" size="{PLATE_RADIUS} {PLATE_HALF_HEIGHT}" '
                f'rgba="{_jitter_colour(rng, (0.9, 0.9, 0.92), 0.05)}"/></body>',
            ]
        )
        return TaskScene(self.name, self.instruction, xml, self.arms, {"block": block, "plate": plate})

    def success(self, model, data):
        block, plate = body_position(model, data, "block"), body_position(model, data, "plate")
        on_plate = np.linalg.norm(block[:2] - plate[:2]) < PLATE_RADIUS - 0.01
        resting = block[2] < 2 * PLATE_HALF_HEIGHT + BLOCK_HALF + 0.005 and body_speed(model, data, "block") < 0.02
        return bool(on_plate and resting)


class BlockIntoDrawer(Task):
    """A cabinet with a drawer that slides along x (open towards the robot), open at the start."""

    name = "block_into_drawer"
    instruction = TASK_SPECS[name].instruction
    arms = TASK_SPECS[name].arms
    time_limit = 45.0
    INTERIOR = np.array([0.07, 0.06])  # half extents of the drawer's inside, x and y

    def sample(self, rng):
        cabinet = np.array([rng.uniform(0.44, 0.47), rng.uniform(0.14, 0.18), 0.0])
        block = np.array([rng.uniform(0.28, 0.33), rng.uniform(0.33, 0.38), BLOCK_HALF])
        wood = _jitter_colour(rng, (0.55, 0.4, 0.25), 0.05)
        ix, iy = self.INTERIOR
        drawer = "\n".join(
            [
                # The drawer's frame: the centre of its floor; closed at x = 0 in the cabinet.
                f'<body name="drawer" pos="0 0 0.006"><joint name="drawer" type="slide" axis="1 0 0" '
                f'range="{-DRAWER_TRAVEL} 0" damping="8" frictionloss="0.3"/>',
                f'<geom type="box" size="{ix} {iy} 0.004" rgba="{wood}" mass="0.2"/>',
                f'<geom type="box" size="0.004 {iy} 0.02" pos="{ix} 0 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="0.006 {iy + 0.01} 0.026" pos="{-ix - 0.006} 0 0.022" rgba="{wood}" mass="0.05"/>',
                f'<geom type="box" size="{ix} 0.004 0.02" pos="0 {iy} 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="{ix} 0.004 0.02" pos="0 {-iy} 0.02" rgba="{wood}" mass="0.02"/>',
                f'<geom type="box" size="0.008 0.03 0.008" pos="{-ix - 0.02} 0 0.03" rgba="0.3 0.3 0.3 1" mass="0.01"/>',
                "</body>",
            ]
        )
        cabinet_xml = "\n".join(
            [
                f'<body name="cabinet" pos="{_vec(cabinet)}">',
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
            "\n".join([_block_xml("block", block, _jitter_colour(rng, (0.1, 0.3, 0.85))), cabinet_xml]),
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


class CupStacking(Task):
    name = "cup_stacking"
    instruction = TASK_SPECS[name].instruction
    arms = TASK_SPECS[name].arms
    time_limit = 60.0

    def sample(self, rng):
        positions = {
            "red": np.array([rng.uniform(0.30, 0.33), rng.uniform(-0.02, 0.02), 0.0]),
            "yellow": np.array([rng.uniform(0.28, 0.32), rng.uniform(0.28, 0.34), 0.0]),
            "green": np.array([rng.uniform(0.28, 0.32), rng.uniform(-0.34, -0.28), 0.0]),
        }
        # The red cup stands (heavy base) between the arms; the others are carried.
        xml = "\n".join(
            _cup_xml(name, position, _jitter_colour(rng, CUP_RGBA[name], 0.06), 0.3 if name == STACK_ORDER[0] else 0.02)
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


TASKS: dict[str, Task] = {task.name: task for task in (BlockToPlate(), BlockIntoDrawer(), CupStacking())}
