"""Scripted experts: each task as timed grasp-point waypoints per arm, turned into joint
targets by the executor's own IK. They drive the executor's teleop input in simulation (the
demonstrations that get recorded) and show that each task can be done in the scene.

The grasp point is between the finger pads, ``GRASP_OFFSET`` along the tool's x axis from
the flange; the tool is turned towards the grasp point (yaw about the arm's base) and
pitched down as far as the R5's joint limits allow at that height (``pitch_for``: measured
by IK over the work area; a vertical gripper is out of reach for this arm).

A task is a list of moves planned from where the objects are now (a move already done is left
out), so an expert can start mid-task and start a move again when its object is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from arx_r5_driver.kinematics import ArmKinematics

from .bodies import body_position
from .moves import OPEN, FixedPath, Move, PickAndPlace, Waypoint
from .world import SimWorld

GRASP_OFFSET = 0.09


def pitch_for(tip_height: float) -> float:
    """Downward pitch (rad) of the tool for a grasp point ``tip_height`` m above the arm's
    base: ~0.1 rad inside the limit found by IK (0.6 at -0.09 m, 0.3 at 0, 0.1 at 0.06)."""
    return float(np.clip(0.25 - 3.0 * tip_height, -0.1, 0.5))


def plan(world: SimWorld) -> list[Move]:
    """The task's moves (``Task.moves``), those already done left out: the expert starts from
    wherever the objects are."""
    return [move for move in world.task.moves(world) if isinstance(move, FixedPath) or not move.done(world)]


EXPERT_DELAY = 1.0  # sim s from a reset before the expert starts: the scene settles first


def operator_name(noise: float) -> str:
    """Who recorded a demonstration (the episode's ``operator``): the scripted expert, perturbed
    by ``noise`` rad (then labelled with what it meant) or not."""
    return "scripted expert" + (f" (perturbed: {noise:g} rad; label: intended)" if noise else "")


class ScriptedExpert:
    """Joint targets over time for every arm of the world (teleop source interface).

    Each waypoint is reached along a smoothstep path in its ``duration``; the next one
    starts only once the arm has got there (its measured grasp point within ``ARRIVED`` m;
    with a body in the grasp, also that body within ``ARRIVED`` m of where it is to go, and
    swinging no faster than ``SETTLED`` m/s; a settled body that is off is re-aimed, up to
    ``CORRECTIONS`` times), or after ``PATIENCE`` x the duration: when the
    arms lag (a loaded machine, the executor's speed caps between the expert and the joints)
    the expert waits for them instead of letting go of a swinging cup above the rim.

    It recovers from wherever the objects go: a body that should be in the grasp and no longer
    moves with it (a missed grasp, a slip, a drop) is picked up again from where it lies, and
    a move whose body did not end up where it was to go is done again, up to ``RETRIES`` times
    a move. So it can take over from a policy at any moment (the simulated operator)."""

    ARRIVED = 0.006  # m
    SETTLED = 0.02  # m/s
    PATIENCE = 3.0
    CORRECTIONS, CORRECTION_DURATION = 3, 0.5  # re-aims of a carried body per waypoint, s each
    # How far a held body may drift from where it sat in the grasp when the fingers closed
    # before it counts as lost: a pinched cup swings by up to ~2 cm in a carry.
    LOST = 0.04  # m
    RETRIES = 3
    LET_GO_DURATION = 0.8  # s to open the fingers and rise before picking a lost body again

    def __init__(self, world: SimWorld, kinematics: dict[str, ArmKinematics], start_time: float):
        self.world = world
        self.kinematics = kinematics
        self.ik_failures = 0
        self.recoveries = 0  # moves started again: a body lost from the grasp or not placed
        self.engage(start_time, {arm: world.read(arm) for arm in world.arm_names})

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        """Take over at ``now`` from ``commands`` (joints, gripper per arm: the command in
        force), planning what is left of the task from where the objects are (teleop source
        interface: the simulated operator taking over from a policy)."""
        self.moves = plan(self.world)
        self.start_time = now
        self.targets_now = {arm: (np.asarray(q, float).copy(), float(g)) for arm, (q, g) in commands.items()}
        self._move = 0  # index into moves
        self._retries = 0  # of the current move
        self.waypoints = self._waypoints_of(0)
        self._index = 0
        self._segment_start = now
        self._from = {arm: (self._tip(arm, q), g) for arm, (q, g) in self.targets_now.items()}  # tip, gripper
        self._target_tip: np.ndarray | None = None  # the current waypoint's (shifted) target
        self._duration = self.waypoints[0].duration if self.waypoints else 0.0  # of the current segment
        self._corrections = 0
        self._grasp_offset: np.ndarray | None = None  # held body - grasp point, when the fingers closed

    @property
    def phase(self) -> tuple[int, int]:
        """(move, waypoint within it) the expert is on."""
        return self._move, self._index

    def _waypoints_of(self, move: int) -> list[Waypoint]:
        if move >= len(self.moves):
            return []
        step = self.moves[move]
        pick = body_position(self.world.model, self.world.data, step.body) if isinstance(step, PickAndPlace) else None
        return step.waypoints(pick)

    def _lost(self, waypoint: Waypoint) -> bool:
        """Whether the body this segment holds no longer moves with the grasp point."""
        if not waypoint.holding:
            self._grasp_offset = None
            return False
        offset = self._body_position(waypoint.holding) - self._tip(waypoint.arm, self.world.read(waypoint.arm)[0])
        if self._grasp_offset is None:
            self._grasp_offset = offset
        return bool(np.linalg.norm(offset - self._grasp_offset) > self.LOST)

    def _start_again(self, now: float, let_go: bool) -> None:
        """The current move from the start, from where its body lies now; ``let_go``: the
        fingers open and the arm rises first (the body left the grasp mid-move)."""
        self.recoveries += 1
        self._retries += 1
        move = self.moves[self._move]
        waypoints = self._waypoints_of(self._move)
        if let_go:
            tip = self._tip(move.arm, self.world.read(move.arm)[0])
            waypoints = [
                Waypoint(move.arm, tip, OPEN, self.LET_GO_DURATION),
                Waypoint(move.arm, np.r_[tip[:2], max(tip[2], move.carry_height)], OPEN, self.LET_GO_DURATION),
                *waypoints,
            ]
            self._from[move.arm] = (tip, self.targets_now[move.arm][1])
        self.waypoints, self._index = waypoints, 0
        self._segment_start, self._target_tip, self._corrections = now, None, 0
        self._duration, self._grasp_offset = waypoints[0].duration, None

    def _next_move(self, now: float) -> None:
        move = self.moves[self._move]
        if not move.done(self.world) and self._retries < self.RETRIES:
            self._start_again(now, let_go=False)
            return
        self._move, self._retries = self._move + 1, 0
        self.waypoints, self._index = self._waypoints_of(self._move), 0
        self._segment_start, self._target_tip, self._corrections, self._grasp_offset = now, None, 0, None
        self._duration = self.waypoints[0].duration if self.waypoints else 0.0

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

    def _segment_target(self, waypoint: Waypoint) -> np.ndarray:
        """The waypoint's tip, shifted once (as its segment starts) by where the carried body
        sits in the grasp."""
        if self._target_tip is None:
            target = waypoint.tip.copy()
            if waypoint.over:
                target[:2] = self._body_position(waypoint.over)[:2]
            if waypoint.carrying:
                tip = self._tip(waypoint.arm, self.world.read(waypoint.arm)[0])
                target[:2] += (tip - self._body_position(waypoint.carrying))[:2]
            self._target_tip = target
        return self._target_tip

    def _body_position(self, name: str) -> np.ndarray:
        return body_position(self.world.model, self.world.data, name)

    def _arrival(self, waypoint: Waypoint) -> str:
        """ "moving"; "arrived"; or "off": the tip is there and the carried body settled, but
        the body is not where it is to go (it swung in the grasp since the segment began)."""
        measured = self._tip(waypoint.arm, self.world.read(waypoint.arm)[0])
        if np.linalg.norm(measured - self._segment_target(waypoint)) >= self.ARRIVED:
            return "moving"
        if not waypoint.carrying:
            return "arrived"
        body = self.world.model.body(waypoint.carrying).id
        velocity = np.zeros(6)  # (angular, linear), world frame
        mujoco.mj_objectVelocity(self.world.model, self.world.data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        if np.linalg.norm(velocity[3:]) >= self.SETTLED:
            return "moving"
        wanted = self._body_position(waypoint.over)[:2] if waypoint.over else waypoint.tip[:2]
        return (
            "arrived" if np.linalg.norm(self._body_position(waypoint.carrying)[:2] - wanted) < self.ARRIVED else "off"
        )

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        while self._index < len(self.waypoints) and now >= self.start_time:
            waypoint = self.waypoints[self._index]
            if self._lost(waypoint) and self._retries < self.RETRIES:
                self._start_again(now, let_go=True)
                break
            elapsed = now - self._segment_start
            if elapsed < self._duration:
                break
            arrival = self._arrival(waypoint)
            if arrival == "off" and self._corrections < self.CORRECTIONS:
                # Aim again from here with the body's offset in the grasp as it is now.
                self._from[waypoint.arm] = (self._segment_target(waypoint), waypoint.gripper)
                self._segment_start, self._target_tip, self._duration = now, None, self.CORRECTION_DURATION
                self._corrections += 1
                break
            if arrival == "moving" and elapsed <= self.PATIENCE * waypoint.duration:
                break
            self._from[waypoint.arm] = (self._segment_target(waypoint), waypoint.gripper)
            self._index += 1
            self._segment_start, self._target_tip, self._corrections = now, None, 0
            if self._index < len(self.waypoints):
                self._duration = self.waypoints[self._index].duration
            else:
                self._next_move(now)
        if self._index >= len(self.waypoints) or now < self.start_time:
            return dict(self.targets_now)
        waypoint = self.waypoints[self._index]
        s = float(np.clip((now - self._segment_start) / self._duration, 0.0, 1.0))
        s = s * s * (3 - 2 * s)  # smoothstep: at rest at each waypoint
        from_tip, from_gripper = self._from[waypoint.arm]
        tip = (1 - s) * from_tip + s * self._segment_target(waypoint)
        gripper = (1 - s) * from_gripper + s * waypoint.gripper
        self.targets_now[waypoint.arm] = (
            self._ik(waypoint.arm, tip, self.targets_now[waypoint.arm][0]),
            float(gripper),
        )
        return dict(self.targets_now)

    def done(self, now: float) -> bool:
        return self._move >= len(self.moves)


class ExecutionNoise:
    """Perturbed demonstrations (DART, Laskey et al. 2017): a slowly varying offset added to
    the joints an expert commands, so that what is executed wanders off the expert's path
    while the expert's own targets, recorded as the labels, lead back to it. Per joint an
    Ornstein-Uhlenbeck process of stationary standard deviation ``scale`` rad and correlation
    time ``tau`` s, seeded; the grippers are left alone (a noisy grasp is a different task)."""

    def __init__(self, scale: float, seed: int, tau: float = 0.5):
        if not (np.isfinite(scale) and scale >= 0):
            raise ValueError(f"the noise scale must be a finite number >= 0 rad, not {scale}")
        self.scale, self.tau = float(scale), float(tau)
        self._rng = np.random.default_rng([seed, 0xDA27])
        self._offsets: dict[str, np.ndarray] = {}
        self._time: float | None = None

    def __call__(self, targets: dict[str, tuple[np.ndarray, float]], now: float) -> dict[str, tuple[np.ndarray, float]]:
        if self.scale == 0:
            return targets
        decay = 1.0 if self._time is None else float(np.exp(-max(now - self._time, 0.0) / self.tau))
        self._time = now
        out = {}
        for arm, (joints, gripper) in targets.items():
            previous = self._offsets.get(arm)
            fresh = self._rng.standard_normal(len(joints)) * self.scale
            # Stationary from the first draw; afterwards x' = a x + sqrt(1 - a^2) sigma n.
            offset = fresh if previous is None else decay * previous + np.sqrt(1.0 - decay**2) * fresh
            self._offsets[arm] = offset
            out[arm] = (np.asarray(joints, float) + offset, gripper)
        return out


@dataclass
class NoisyOperator:
    """A teleop source: the expert's targets with ``noise`` added to what is executed; the
    targets as the expert meant them are kept (``intended``), the label of perturbed
    demonstrations."""

    expert: ScriptedExpert
    noise: ExecutionNoise
    intended: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        self.intended = self.expert.targets(now)
        return self.noise(self.intended, now)

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        self.expert.engage(now, commands)
