"""What a scripted expert does, as data: waypoints of an arm's grasp point, and the moves a
task is made of (carry a body from where it lies to a place; a fixed path). A task
(``sim.tasks``) lists its moves; the expert (``sim.experts``) turns them into joint targets.
ROS-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from arx_r5_driver.kinematics import GRIPPER_MAX_OPENING_M

from .bodies import body_position, body_speed

if TYPE_CHECKING:
    from .world import SimWorld

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
    # A body to place onto: the tip's x, y follow where that body is when the segment starts
    # (a cup nested a few millimetres off centre moves the next cup's target with it).
    over: str = ""
    # A body that must stay in the grasp through this segment (it moves with the grasp point).
    holding: str = ""


@dataclass
class PickAndPlace:
    """One arm carries ``body`` from wherever it lies to ``place`` (world). Heights are the
    grasp point's, world z: grasping, letting go, and while moving. The move is done once the
    body rests within ``tolerance`` m (horizontally) of where it was to go, and less than
    ``rest_above`` m above it (not perched on a rim)."""

    arm: str
    body: str
    place: np.ndarray
    grasp_height: float
    release_height: float
    tolerance: float
    rest_above: float
    carry_height: float = 0.13
    over: str = ""  # a body to place onto (its position at each segment's start is the target)

    def waypoints(self, pick: np.ndarray) -> list[Waypoint]:
        arm, body, over = self.arm, self.body, self.over
        pick_at, pick_above = np.r_[pick[:2], self.grasp_height], np.r_[pick[:2], self.carry_height]
        place_at, place_above = np.r_[self.place[:2], self.release_height], np.r_[self.place[:2], self.carry_height]
        return [
            Waypoint(arm, pick_above, OPEN, 2.0),
            Waypoint(arm, pick_at, OPEN, 1.5),
            Waypoint(arm, pick_at, CLOSED, 0.8),
            Waypoint(arm, pick_above, CLOSED, 1.2, holding=body),
            Waypoint(arm, place_above, CLOSED, 1.8, carrying=body, over=over, holding=body),
            Waypoint(arm, place_at, CLOSED, 1.0, carrying=body, over=over, holding=body),
            Waypoint(arm, place_at, OPEN, 0.6, over=over),
            Waypoint(arm, place_above, OPEN, 1.0, over=over),
            Waypoint(arm, pick_above, OPEN, 1.5),  # out of the other arm's way
        ]

    def done(self, world: SimWorld) -> bool:
        position = body_position(world.model, world.data, self.body)
        target = body_position(world.model, world.data, self.over) if self.over else self.place
        return bool(
            np.linalg.norm(position[:2] - target[:2]) < self.tolerance
            and position[2] < target[2] + self.rest_above
            and body_speed(world.model, world.data, self.body) < 0.02
        )


@dataclass
class FixedPath:
    """Waypoints that need no object where it was planned (closing the drawer)."""

    path: list[Waypoint]

    def waypoints(self, pick: np.ndarray | None = None) -> list[Waypoint]:
        return list(self.path)

    def done(self, world: SimWorld) -> bool:
        return True


Move = PickAndPlace | FixedPath
