"""The dual-arm controller: chunks in, one safe joint command per arm per control cycle out.
ROS-free; the executor node calls it from its control loop with the ROS clock's time.

Each cycle, the source in force gives a target per arm:

- e-stop: the last command, held at once; every chunk is refused until ``resume``;
- teleop: the teleoperation source's joints (chunks are refused while it drives);
- policy: the chunk scheduler's setpoint (time-aligned, blended) through IK, seeded with
  the last command; a pose IK cannot reach holds the arm. With no fresh chunk for
  ``watchdog_timeout`` the trajectory is replaced by a deceleration to a hold;
- nothing yet: hold where the arms are.

The controller starts from where the arms are: its first cycle reads them (``resync``), and
so does the first cycle after ``desync`` (the world changed under it: a simulation reset, the
clock jumping back). Until the backends can be read (``BackendNotReady``) no cycle runs and
every chunk is refused.

Whatever the source, the target then passes the safety supervisor: per arm, the joint
limits, joint and Cartesian speed caps and workspace box (``SafetyFilter``); the gripper's
range and speed; then the clearance between the arms (a command that brings them closer
than ``min_clearance`` holds both). What changed a command is reported in ``Cycle.limits_hit``.
Speed caps are applied over the time since the previous commands went out, at most ``max_cycle_period``
(ros2_control's controllers likewise update with the measured period).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy.spatial.transform import Rotation

from rotvla_common.contract import CONTROL_SOURCES, POLICY, TELEOP

from .backends import ArmBackend, BackendNotReady
from .chunks import INVALID, OUT_OF_ORDER, STALE, Chunk, ChunkRejected, validate_chunk
from .clearance import ArmClearance
from .kinematics import GRIPPER_MAX_OPENING_M, ArmKinematics
from .safety import SafetyFilter
from .scheduler import ActionLayout, ChunkScheduler, Setpoint
from .teleop import TeleopSource

ESTOP = "estop"
NOT_READY = "not_ready"


class SwitchRefused(RuntimeError):
    """A change of control source the controller will not make now (an e-stop is engaged)."""


class Mode(IntEnum):
    """The values of rotvla_msgs/ExecutorStatus.MODE_*."""

    IDLE = 0
    EXECUTING = 1
    HOLDING = 2
    ESTOP = 3
    TELEOP = 4


@dataclass
class ControllerConfig:
    control_period: float = 0.005  # s (200 Hz)
    # Speed caps apply over the time since the previous cycle, so that a late cycle (a loaded
    # machine, a coarse sim clock) does not slow the arm down; beyond this the step is capped
    # as if this much time had passed, so that a stall never turns into a jump.
    max_cycle_period: float = 0.02  # s
    overlap_steps: int = 8  # chunk steps blended at a seam (benchmarks/bench_seams.py: 8 beats 4 on smoothness and lag)
    latency_compensation: float = 0.0  # s, added to every step's due time
    future_tolerance: float = 0.05  # s: a chunk stamped further ahead of the clock is refused
    watchdog_timeout: float = 0.5  # s without a fresh chunk -> decelerate to a hold
    hold_deceleration: float = 0.15  # s from the setpoint's velocity to rest
    min_clearance: float = 0.05  # m between the two arms' link capsules
    gripper_speed: float = 0.2  # m/s of opening
    # A learned policy regresses "fully open" and "closed" as values a little past the range's
    # ends; clamping those is not a safety event (it was ~1,000 a minute with a trained policy).
    gripper_range_tolerance: float = 0.005  # m beyond [0, max opening] clamped without counting
    ik_position_tolerance: float = 0.005  # m: a setpoint IK misses by more holds the arm
    ik_rotation_tolerance: float = 0.05  # rad
    ik_iterations: int = 50
    max_horizon: int = 1000  # steps: a longer chunk is refused (it would stall the control loop)
    max_text: int = 256  # characters of a chunk's checkpoint id


@dataclass
class Arm:
    name: str
    kinematics: ArmKinematics
    safety: SafetyFilter
    backend: ArmBackend


@dataclass(frozen=True)
class ExecutedStep:
    sequence: int
    index: int  # step of the chunk
    due: float  # when it was due
    at: float  # the control cycle that reached it (due <= at < due + period)


@dataclass
class Cycle:
    """What one control cycle did."""

    time: float
    mode: Mode
    joints: np.ndarray  # (A, 6) commanded
    grippers: np.ndarray  # (A,) commanded opening, m
    measured_joints: np.ndarray  # (A, 6) read at the start of the cycle
    measured_grippers: np.ndarray  # (A,)
    limits_hit: list[str]
    executed: list[ExecutedStep]
    # When the measured state was taken: ``time``, or earlier for arms whose state comes over
    # a topic (the oldest arm's stamp). The state topics carry this, not ``time``.
    measured_time: float


@dataclass
class Counters:
    executed_steps: int = 0
    chunks_accepted: int = 0
    chunks_rejected: int = 0
    limit_events: int = 0
    watchdog_stops: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


class DualArmController:
    def __init__(
        self,
        arms: list[Arm],
        action_names: tuple[str, ...],
        config: ControllerConfig | None = None,
        clearance: ArmClearance | None = None,
    ):
        self.arms = arms
        self.config = config or ControllerConfig()
        self.action_names = tuple(action_names)
        layout = ActionLayout.from_names(self.action_names)
        if layout.arms != tuple(a.name for a in arms):
            raise ValueError(f"the action layout's arms {layout.arms} are not the executor's {[a.name for a in arms]}")
        self.scheduler = ChunkScheduler(layout, self.config.overlap_steps, self.config.latency_compensation)
        self.clearance = clearance
        self.counters = Counters()
        self.mode = Mode.IDLE
        self.estopped = False
        self.teleop: TeleopSource | None = None
        self.control_source = POLICY  # who drives: a name of CONTROL_SOURCES
        self.last_rejection: tuple[str, float] | None = None  # reason with details, time
        self.active_chunk: Chunk | None = None
        self._stopping = False  # the watchdog's deceleration is in force
        self._last_chunk_time = -math.inf
        self._pending: deque[tuple[float, int, int]] = deque()  # (due, sequence, index) of scheduled steps
        self.commands = np.zeros((len(arms), 6))  # (A, 6): the last command sent (once synced)
        self.grippers = np.zeros(len(arms))  # (A,)
        self._clearance_now = math.inf
        self._last_sent: float | None = None
        self._unreachable: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # arm -> the pose IK last failed on
        self.synced = False

    def resync(self) -> None:
        """Take the arms' measured state as the command in force, with no trajectory (raises
        ``BackendNotReady`` while a backend has no state)."""
        readings = [arm.backend.read() for arm in self.arms]
        self.commands = np.array([q for q, _ in readings], dtype=float)
        self.grippers = np.array([g for _, g in readings], dtype=float)
        self._clearance_now = self._clearance(self.commands)
        self._drop_trajectory()
        self._last_sent = None
        self._last_chunk_time = -math.inf
        self.synced = True

    def desync(self) -> None:
        """The arms may no longer be where they were commanded (the world was reset): the next
        cycle starts from their measured state, and chunks are refused until then."""
        self.synced = False
        self._drop_trajectory()

    # -- inputs ---------------------------------------------------------------------------

    def submit(
        self,
        *,
        stamp: float,
        dt: float,
        horizon: int,
        action_names,
        actions,
        now: float,
        sequence: int = 0,
        checkpoint_id: str = "",
    ) -> Chunk:
        """Validate a chunk and schedule its future steps; raises ``ChunkRejected`` with the
        reason (counted, remembered for the status), leaving the motion in force untouched."""
        try:
            if not self.synced:
                try:
                    self.resync()
                except BackendNotReady as waiting:
                    raise ChunkRejected(NOT_READY, f"the arms' state is not known yet ({waiting})") from None
            if self.estopped:
                raise ChunkRejected(ESTOP, "e-stop is engaged: call resume")
            if self.teleop is not None:
                raise ChunkRejected(TELEOP, "teleoperation drives the arms")
            chunk = validate_chunk(
                stamp=stamp,
                dt=dt,
                horizon=horizon,
                action_names=action_names,
                actions=actions,
                expected_names=self.action_names,
                now=now,
                latency_compensation=self.config.latency_compensation,
                future_tolerance=self.config.future_tolerance,
                sequence=sequence,
                checkpoint_id=checkpoint_id,
                max_horizon=self.config.max_horizon,
                max_text=self.config.max_text,
            )
            active = self.active_chunk
            if active is not None and (chunk.stamp, chunk.sequence) <= (active.stamp, active.sequence):
                raise ChunkRejected(
                    OUT_OF_ORDER,
                    f"stamp {chunk.stamp:.3f} / sequence {chunk.sequence} is not newer "
                    f"than the chunk in force ({active.stamp:.3f} / {active.sequence})",
                )
            # A step due within half a period of now is too close to bend the motion towards it:
            # the scheduler drops it. A chunk with nothing else schedules nothing, and must not
            # feed the watchdog.
            if not (chunk.due_times(self.config.latency_compensation) >= now + 0.5 * chunk.dt).any():
                raise ChunkRejected(STALE, "no step due at least half a period from now")
        except ChunkRejected as rejection:
            self.count_rejection(rejection, now)
            raise
        try:
            taken = self.scheduler.submit(chunk, now, None if self.scheduler.active else self._setpoint_at_rest())
        except Exception as error:  # what the checks let through and the trajectory maths cannot take
            rejection = ChunkRejected(INVALID, f"{type(error).__name__}: {error}")
            self.count_rejection(rejection, now)
            raise rejection from error
        self._stopping = False
        due = chunk.due_times(self.config.latency_compensation)
        self._pending = deque((float(due[i]), chunk.sequence, i) for i in range(horizon - taken, horizon))
        self.active_chunk = chunk
        self._last_chunk_time = now
        self.counters.chunks_accepted += 1
        return chunk

    def count_rejection(self, rejection: ChunkRejected, now: float) -> None:
        """Count a chunk refused before it reached ``submit`` (one too large to decode)."""
        self.counters.chunks_rejected += 1
        self.counters.rejections[rejection.reason] = self.counters.rejections.get(rejection.reason, 0) + 1
        self.last_rejection = (str(rejection), now)

    def estop(self) -> None:
        """Hold the last command from the next cycle on; refuse chunks until ``resume``."""
        self.estopped = True
        self._drop_trajectory()

    def resume(self) -> None:
        self.estopped = False

    def set_teleop(self, source: TeleopSource | None, name: str = TELEOP) -> None:
        self.teleop = source
        self.control_source = name if source is not None else POLICY
        self._drop_trajectory()

    def take_over(self, source: TeleopSource, now: float, name: str = TELEOP) -> None:
        """``source`` (named ``name`` of ``CONTROL_SOURCES``: teleop, homing) drives from the
        next cycle on, starting from the command in force (bumpless: the source engages from
        it; the chunk in force is dropped, never resumed). Raises ``SwitchRefused`` during an
        e-stop: the e-stop's hold is released by ``resume`` alone."""
        if name not in CONTROL_SOURCES or name == POLICY:
            raise ValueError(f"a source that takes over is one of {CONTROL_SOURCES[1:]}, not {name!r}")
        if self.estopped:
            raise SwitchRefused("e-stop is engaged: call resume first")
        if not self.synced:
            self.resync()
        source.engage(
            now, {arm.name: (self.commands[a].copy(), float(self.grippers[a])) for a, arm in enumerate(self.arms)}
        )
        self.set_teleop(source, name)

    def hand_back(self) -> None:
        """The policy drives again: the arms hold their command until its next chunk, which is
        blended from that command at rest. Raises ``SwitchRefused`` during an e-stop."""
        if self.estopped:
            raise SwitchRefused("e-stop is engaged: call resume first")
        self.set_teleop(None)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # -- the control cycle ----------------------------------------------------------------

    def step(
        self,
        now: float,
        send_clock: Callable[[], float] | None = None,
        wait_until: Callable[[float], None] | None = None,
    ) -> Cycle:
        """One control cycle at ``now``; raises ``BackendNotReady`` (nothing commanded) while
        the arms cannot be read. ``send_clock``: reads the clock the backends stamp their
        commands by (without one, ``now`` stands for every reading). The speed caps apply over
        the time from the previous cycle's last send to this cycle's first: every command of
        this cycle goes out at or after a reading taken before the caps are applied, and the
        previous cycle's went out before a reading taken after them, so the motion between two
        commands of an arm is within the caps over the time between their own stamps, whatever
        the load delays. ``wait_until(t)``: blocks until ``send_clock`` reads ``t``; with it a
        cycle read less than ``control_period`` after the previous send may move for one
        period and holds its commands until then (without it, a loop that overruns would be
        allowed next to no motion)."""
        if not self.synced:
            self.resync()
        readings = [arm.backend.read() for arm in self.arms]
        measured = np.array([q for q, _ in readings], dtype=float)
        measured_grippers = np.array([g for _, g in readings], dtype=float)
        stamps = [arm.backend.measured_at() for arm in self.arms if hasattr(arm.backend, "measured_at")]
        measured_time = min([now] + [stamp for stamp in stamps if stamp is not None])
        hit: list[str] = []
        targets, gripper_targets = self.commands.copy(), self.grippers.copy()
        executed: list[ExecutedStep] = []
        if self.estopped:
            self.mode = Mode.ESTOP
        elif self.teleop is not None:
            self.mode = Mode.TELEOP
            wanted = self.teleop.targets(now)
            for a, arm in enumerate(self.arms):
                if arm.name in wanted:
                    targets[a], gripper_targets[a] = wanted[arm.name]
        elif self.scheduler.active:
            if not self._stopping and now - self._last_chunk_time > self.config.watchdog_timeout:
                self.scheduler.stop(now, self.config.hold_deceleration)
                self._stopping = True
                self._pending.clear()  # the rest of a stale plan is never executed
                self.counters.watchdog_stops += 1
            setpoint = self.scheduler.sample(now)
            self.mode = Mode.HOLDING if self._stopping or now >= self.scheduler.end_time() else Mode.EXECUTING
            for a, arm in enumerate(self.arms):
                reached = self._solve(a, setpoint.linear[a, :3], setpoint.rotation[a].as_matrix())
                if reached is not None:
                    targets[a] = reached
                else:
                    hit.append(f"{arm.name}:unreachable")
                gripper_targets[a] = setpoint.linear[a, 3]
            while self._pending and self._pending[0][0] <= now:
                due, sequence, index = self._pending.popleft()
                executed.append(ExecutedStep(sequence, index, due, now))
        else:
            self.mode = Mode.IDLE

        period = self._cycle_period(send_clock() if send_clock is not None else now, wait_until is not None)
        commands = np.empty_like(self.commands)
        for a, arm in enumerate(self.arms):
            commands[a], arm_hit = arm.safety.filter(self.commands[a], targets[a], period)
            hit += arm_hit
        grippers = self._filter_grippers(gripper_targets, period, hit)
        clearance = self._clearance(commands)
        if clearance < self.config.min_clearance and clearance < self._clearance_now - 1e-9:
            commands, clearance = self.commands.copy(), self._clearance_now  # closer than allowed: hold both
            hit.append("arms:clearance")
        if wait_until is not None and self._last_sent is not None:
            wait_until(self._last_sent + period)
        for a, arm in enumerate(self.arms):
            arm.backend.command(commands[a], float(grippers[a]))
        self._last_sent = send_clock() if send_clock is not None else now  # after the last stamp
        self.commands, self.grippers, self._clearance_now = commands, grippers, clearance
        self.counters.executed_steps += len(executed)
        self.counters.limit_events += bool(hit)
        return Cycle(
            now, self.mode, commands.copy(), grippers.copy(), measured, measured_grippers, hit, executed, measured_time
        )

    # -- helpers --------------------------------------------------------------------------

    def _solve(self, a: int, position: np.ndarray, rotation: np.ndarray) -> np.ndarray | None:
        """Joints reaching the pose for arm ``a`` (seeded with its last command), or None when
        IK misses it by more than the tolerances. A pose that failed is not solved again
        while it stays the same: holding at an unreachable target costs one solve, not one
        per cycle."""
        failed = self._unreachable.get(a)
        if failed is not None and np.array_equal(failed[0], position) and np.array_equal(failed[1], rotation):
            return None
        result = self.arms[a].kinematics.ik(
            position, rotation, self.commands[a], max_iterations=self.config.ik_iterations
        )
        if (
            result.position_error <= self.config.ik_position_tolerance
            and result.rotation_error <= self.config.ik_rotation_tolerance
        ):
            self._unreachable.pop(a, None)
            return result.q
        self._unreachable[a] = (position.copy(), rotation.copy())
        return None

    def _drop_trajectory(self) -> None:
        self.scheduler.reset()
        self._pending.clear()
        self._stopping = False
        self.active_chunk = None

    def _setpoint_at_rest(self) -> Setpoint:
        """The last command as an action-space setpoint with zero velocity."""
        poses = [arm.kinematics.fk(q) for arm, q in zip(self.arms, self.commands)]
        count = len(self.arms)
        return Setpoint(
            linear=np.array([np.r_[position, g] for (position, _), g in zip(poses, self.grippers)]),
            linear_velocity=np.zeros((count, 4)),
            rotation=Rotation.from_matrix(np.stack([rotation for _, rotation in poses])),
            angular_velocity=np.zeros((count, 3)),
        )

    def _cycle_period(self, now: float, can_wait: bool) -> float:
        """Seconds this cycle's commands may cover: the time since the previous commands went
        out (at least one ``control_period`` when the send can wait for it; the nominal period
        for the first one, or after the clock went back; next to nothing when no time has
        passed), at most ``max_cycle_period``."""
        last = self._last_sent
        if last is None or now < last:
            return self.config.control_period
        floor = self.config.control_period if can_wait else 1e-6
        return min(max(now - last, floor), max(self.config.max_cycle_period, self.config.control_period))

    def _filter_grippers(self, targets: np.ndarray, period: float, hit: list[str]) -> np.ndarray:
        out = self.grippers.copy()
        step_cap = self.config.gripper_speed * period
        for a, arm in enumerate(self.arms):
            target = targets[a]
            if not np.isfinite(target):
                hit.append(f"{arm.name}/gripper:nonfinite_target")
                continue
            clamped = float(np.clip(target, 0.0, GRIPPER_MAX_OPENING_M))
            if abs(clamped - target) > self.config.gripper_range_tolerance:
                hit.append(f"{arm.name}/gripper:position")
            step = clamped - self.grippers[a]
            if abs(step) > step_cap:
                step = math.copysign(step_cap, step)
                hit.append(f"{arm.name}/gripper:speed")
            out[a] = self.grippers[a] + step
        return out

    def _clearance(self, commands: np.ndarray) -> float:
        """The arms' clearance, exact below ``min_clearance`` (beyond it, a bound: only
        whether it falls below, and then below the clearance in force, decides anything)."""
        if self.clearance is None or len(commands) != 2:
            return math.inf
        return self.clearance.distance(commands[0], commands[1], beyond=self.config.min_clearance)
