"""Scripted experts: each task as timed grasp-point waypoints per arm, turned into joint
targets by the executor's own IK. They drive the executor's teleop input in simulation (the
demonstrations that get recorded) and show that each task can be done in the scene.

The grasp point is between the finger pads, ``GRASP_OFFSET`` along the tool's x axis from
the flange; the tool is turned towards the grasp point (yaw about the arm's base) and
pitched down as far as the R5's joint limits allow at that height (``pitch_for``: measured
by IK over the work area; a vertical gripper is out of reach for this arm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from arx_r5_driver.kinematics import GRIPPER_MAX_OPENING_M, ArmKinematics

from .tasks import BLOCK_HALF, CUPS, BlockIntoDrawer
from .world import SimWorld

GRASP_OFFSET = 0.09
OPEN, CLOSED = GRIPPER_MAX_OPENING_M, 0.0


@dataclass
class Waypoint:
    arm: str
    tip: np.ndarray  # (3,) world, m
    gripper: float  # opening, m
    duration: float  # s to get there from the previous waypoint of the same arm
    # A body being carried: the tip target is shifted by where that body sits in the grasp
    # (measured when the segment starts), so that the body, not the tip, lands on target.
    carrying: str = ""


def pitch_for(tip_height: float) -> float:
    """Downward pitch (rad) of the tool for a grasp point ``tip_height`` m above the arm's
    base: ~0.1 rad inside the limit found by IK (0.6 at -0.09 m, 0.3 at 0, 0.1 at 0.06)."""
    return float(np.clip(0.25 - 3.0 * tip_height, -0.1, 0.5))


def _pick_and_place(arm: str, pick: np.ndarray, place: np.ndarray, grasp_height: float, release_height: float,
                    carry_height: float = 0.13, body: str = "") -> list[Waypoint]:
    """Heights are the grasp point's, world z: grasping, letting go, and while moving."""
    pick_at, pick_above = np.r_[pick[:2], grasp_height], np.r_[pick[:2], carry_height]
    place_at, place_above = np.r_[place[:2], release_height], np.r_[place[:2], carry_height]
    return [
        Waypoint(arm, pick_above, OPEN, 2.0),
        Waypoint(arm, pick_at, OPEN, 1.5),
        Waypoint(arm, pick_at, CLOSED, 0.8),
        Waypoint(arm, pick_above, CLOSED, 1.2),
        Waypoint(arm, place_above, CLOSED, 1.8, carrying=body),
        Waypoint(arm, place_at, CLOSED, 1.0, carrying=body),
        Waypoint(arm, place_at, OPEN, 0.6),
        Waypoint(arm, place_above, OPEN, 1.0),
        Waypoint(arm, pick_above, OPEN, 1.5),  # out of the other arm's way
    ]


def plan(world: SimWorld) -> list[Waypoint]:
    """The task's waypoints, in order (arms take turns)."""
    p = world.scene.positions
    if world.task.name == "block_to_plate":
        return _pick_and_place("left", p["block"], p["plate"], BLOCK_HALF + 0.003, 0.045, body="block")
    if world.task.name == "block_into_drawer":
        opening = BlockIntoDrawer.drawer_opening(world.model, world.data)
        drawer = p["cabinet"] - np.array([opening, 0.0, 0.0])
        front = drawer[0] - BlockIntoDrawer.INTERIOR[0] - 0.012  # the front panel's outer face
        waypoints = _pick_and_place("left", p["block"], drawer, BLOCK_HALF + 0.003, 0.06, body="block")
        push_from = np.array([front - 0.05, drawer[1], 0.035])
        return waypoints + [
            Waypoint("left", push_from + [0, 0, 0.08], CLOSED, 1.2),
            Waypoint("left", push_from, CLOSED, 1.0),
            Waypoint("left", push_from + [opening + 0.03, 0, 0], CLOSED, 2.0),
            # Back off at the same height first: rising at once drags the fingers along the
            # cabinet's top edge and pulls the drawer open again.
            Waypoint("left", push_from + [opening - 0.03, 0, 0], CLOSED, 1.0),
            Waypoint("left", push_from + [opening - 0.03, 0, 0.08], CLOSED, 1.0),
        ]
    if world.task.name == "cup_stacking":
        # Each cup is pinched by its upper wall (the palm stays above the rim), carried with its
        # bottom 1.5 cm above the green cup's rim, and let go there, to drop inside.
        grasp = {name: CUPS[name][1] - 0.015 for name in ("yellow", "red")}
        clear = CUPS["green"][1] + 0.015
        return (_pick_and_place("left", p["yellow"], p["green"], grasp["yellow"], clear + grasp["yellow"],
                                clear + grasp["yellow"], body="yellow_cup")
                + _pick_and_place("right", p["red"], p["green"], grasp["red"], clear + grasp["red"], clear + grasp["red"],
                                  body="red_cup"))
    raise ValueError(f"no expert for {world.task.name}")


class ScriptedExpert:
    """Joint targets over time for every arm of the world (teleop source interface)."""

    def __init__(self, world: SimWorld, kinematics: dict[str, ArmKinematics], start_time: float):
        self.world = world
        self.kinematics = kinematics
        self.waypoints = plan(world)
        self.start_time = start_time
        self.targets_now = {arm: world.read(arm) for arm in world.arm_names}
        self.ik_failures = 0
        self._shifted: dict[int, np.ndarray] = {}
        # Each waypoint's start and end times, and where its arm was when it began.
        self._schedule = []
        t = start_time
        last_tip = {arm: self._tip(arm, self.targets_now[arm][0]) for arm in world.arm_names}
        last_gripper = {arm: self.targets_now[arm][1] for arm in world.arm_names}
        for waypoint in self.waypoints:
            self._schedule.append((t, t + waypoint.duration, last_tip[waypoint.arm], last_gripper[waypoint.arm], waypoint))
            t += waypoint.duration
            last_tip[waypoint.arm], last_gripper[waypoint.arm] = waypoint.tip, waypoint.gripper
        self.end_time = t

    def _tip(self, arm: str, joints: np.ndarray) -> np.ndarray:
        position, rotation = self.kinematics[arm].fk_world(joints)
        return position + GRASP_OFFSET * rotation[:, 0]

    def _ik(self, arm: str, tip_world: np.ndarray, seed: np.ndarray) -> np.ndarray:
        tip = self.kinematics[arm].base_in_world.actInv(np.asarray(tip_world, float))  # in the arm's base frame
        rotation = Rotation.from_euler("yz", [pitch_for(tip[2]), np.arctan2(tip[1], tip[0])]).as_matrix()
        flange = tip - GRASP_OFFSET * rotation[:, 0]
        result = self.kinematics[arm].ik(flange, rotation, seed, max_iterations=300)
        if not result.success:
            self.ik_failures += 1
            return seed
        return result.q

    def _target(self, index: int, waypoint: Waypoint) -> np.ndarray:
        """The waypoint's tip, shifted once (at its start) by the carried body's offset."""
        if index not in self._shifted:
            shift = np.zeros(3)
            if waypoint.carrying:
                tip = self._tip(waypoint.arm, self.targets_now[waypoint.arm][0])
                body = self.world.data.xpos[self.world.model.body(waypoint.carrying).id]
                shift[:2] = (tip - body)[:2]
            self._shifted[index] = waypoint.tip + shift
        return self._shifted[index]

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        for index, (start, end, from_tip, from_gripper, waypoint) in enumerate(self._schedule):
            if start <= now < end:
                s = (now - start) / (end - start)
                s = s * s * (3 - 2 * s)  # smoothstep: at rest at each waypoint
                if index > 0 and self._schedule[index - 1][4].arm == waypoint.arm:
                    from_tip = self._target(index - 1, self._schedule[index - 1][4])
                tip = (1 - s) * from_tip + s * self._target(index, waypoint)
                gripper = (1 - s) * from_gripper + s * waypoint.gripper
                seed = self.targets_now[waypoint.arm][0]
                self.targets_now[waypoint.arm] = (self._ik(waypoint.arm, tip, seed), float(gripper))
                break
        return dict(self.targets_now)

    def done(self, now: float) -> bool:
        return now >= self.end_time
