"""The dual-arm controller on simulated arms and a simulated clock: due steps executed in
order and on time, stale steps never; the safety supervisor whatever the chunk; watchdog,
e-stop, clearance, teleop."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arx_r5_driver.backends.sim import SimArm
from arx_r5_driver.chunks import ChunkRejected
from arx_r5_driver.clearance import ArmCapsules, ArmClearance
from arx_r5_driver.controller import Arm, ControllerConfig, DualArmController, Mode
from arx_r5_driver.kinematics import ArmKinematics
from arx_r5_driver.safety import ArmLimits, SafetyFilter
from arx_r5_driver.teleop import ScriptedTeleop
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES

HOME = np.array([0.0, -1.9, -1.0, -0.5, 0.0, 0.0])
PERIOD = 0.005
JOINT_CAP = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
CARTESIAN_CAP = 0.5
BOX = (np.array([0.05, -0.45, -0.10]), np.array([0.60, 0.45, 0.55]))
KINEMATICS = {name: ArmKinematics(base_xyz=(0.0, y, 0.0)) for name, y in (("left", 0.3), ("right", -0.3))}


def make_controller(config=None, initial=(HOME, HOME), min_clearance=0.05):
    arms, capsules = [], []
    for (name, kinematics), q0 in zip(KINEMATICS.items(), initial):
        limits = ArmLimits(JOINT_CAP, CARTESIAN_CAP, *BOX)
        arms.append(
            Arm(name, kinematics, SafetyFilter(kinematics, limits, name), SimArm(initial=q0, max_velocity=JOINT_CAP))
        )
        capsules.append(ArmCapsules(kinematics, 0.045, 0.12))
    config = config or ControllerConfig(control_period=PERIOD, min_clearance=min_clearance)
    return DualArmController(arms, NAMES, config, ArmClearance(*capsules))


def chunk_actions(offsets, rotation=None, gripper=0.04, q=HOME):
    """(H, 20): both arms at FK(q) + offsets[i] (H, 3), the pose's rotation, the gripper."""
    position, home_rotation = KINEMATICS["left"].fk(q)
    rotation = home_rotation if rotation is None else rotation
    row = lambda off: np.r_[position + off, rotation[:, 0], rotation[:, 1], gripper]  # noqa: E731
    return np.array([np.r_[row(off), row(off)] for off in offsets])


def run(controller, start, end, chunks=(), on_cycle=None, gaps=None):
    """Step the controller (and its sim arms) at the control rate from ``start`` to ``end``
    (or with the time between cycles drawn from ``gaps``: a late, loaded control loop);
    each (arrival time, kwargs) in ``chunks`` is submitted when its time comes."""
    pending = sorted(chunks, key=lambda c: c[0])
    cycles, rejections = [], []
    t = start
    while t < end - 1e-12:
        gap = PERIOD if gaps is None else next(gaps)
        t = round(t + gap, 9)
        while pending and pending[0][0] <= t:
            _, kwargs = pending.pop(0)
            try:
                controller.submit(now=t, action_names=NAMES, **kwargs)
            except ChunkRejected as rejection:
                rejections.append(rejection)
        cycle = controller.step(t)
        for arm in controller.arms:
            arm.backend.step(gap)
        cycles.append(cycle)
        if on_cycle:
            on_cycle(cycle)
    return cycles, rejections


def test_exactly_the_due_steps_are_executed_in_order_on_time_and_stale_steps_never():
    controller = make_controller()
    dt, horizon = 0.02, 20
    offsets = np.c_[np.linspace(0, 0.04, horizon), np.zeros(horizon), np.linspace(0, 0.02, horizon)]
    # Computed from an observation at t=10.0 and arriving 0.07 s later: steps 0..2 (due at
    # 10.02, 10.04, 10.06) are stale.
    chunk = dict(stamp=10.0, dt=dt, horizon=horizon, actions=chunk_actions(offsets), sequence=7)
    cycles, _ = run(controller, 10.0, 10.6, [(10.07, chunk)])
    executed = [step for cycle in cycles for step in cycle.executed]
    assert [s.index for s in executed] == list(range(3, horizon))  # in order, none twice, none stale
    assert all(s.sequence == 7 for s in executed)
    for step in executed:
        assert step.due == pytest.approx(10.0 + (step.index + 1) * dt)
        assert step.due <= step.at < step.due + PERIOD + 1e-9  # the first cycle at or after it is due
    # The commanded pose passes through each step (beyond the blend with the start).
    by_time = {round(c.time, 6): c for c in cycles}
    for step in executed[3:]:
        cycle = by_time[round(step.at, 6)]
        position, _ = KINEMATICS["left"].fk(cycle.joints[0])
        wanted = KINEMATICS["left"].fk(HOME)[0] + offsets[step.index]
        assert np.linalg.norm(position - wanted) < 0.0015  # within a period of motion (0.1 m/s * 5 ms) + IK
    assert controller.counters.executed_steps == horizon - 3


@pytest.mark.parametrize("gripper, counted", [(0.083, False), (-0.003, False), (0.095, True), (-0.02, True)])
def test_a_gripper_target_just_past_its_range_is_clamped_without_a_limit_event(gripper, counted):
    """A policy regresses "fully open" as 0.083: clamped quietly; a target far out is an event."""
    controller = make_controller()
    settle = dict(
        stamp=10.0,
        dt=0.05,
        horizon=10,
        sequence=1,
        actions=chunk_actions(np.zeros((10, 3)), gripper=float(np.clip(gripper, 0.0, 0.08))),
    )
    chunk = dict(stamp=10.5, dt=0.05, horizon=10, actions=chunk_actions(np.zeros((10, 3)), gripper=gripper), sequence=2)
    cycles, _ = run(controller, 10.0, 10.9, [(10.0, settle), (10.5, chunk)])
    assert all(0.0 <= g <= 0.08 for c in cycles for g in c.grippers)
    position_events = [h for c in cycles if c.time > 10.5 for h in c.limits_hit if h.endswith("gripper:position")]
    assert bool(position_events) == counted, position_events


def test_a_chunk_in_the_past_or_future_or_malformed_is_rejected_whole_and_motion_continues():
    controller = make_controller()
    offsets = np.c_[np.linspace(0, 0.03, 10), np.zeros((10, 2))]
    good = dict(stamp=0.0, dt=0.05, horizon=10, actions=chunk_actions(offsets), sequence=1)
    nan = chunk_actions(offsets)
    nan[5, 3] = np.nan
    bad = [
        (0.1, dict(stamp=0.1, dt=0.05, horizon=10, actions=nan, sequence=2)),
        (0.15, dict(stamp=0.15, dt=0.05, horizon=9, actions=chunk_actions(offsets), sequence=3)),
        (0.2, dict(stamp=0.9, dt=0.05, horizon=10, actions=chunk_actions(offsets), sequence=4)),
        (0.25, dict(stamp=-1.0, dt=0.05, horizon=10, actions=chunk_actions(offsets), sequence=5)),
    ]
    cycles, rejections = run(controller, 0.0, 0.6, [(0.0, good), *bad])
    assert [r.reason for r in rejections] == ["nan_or_inf", "wrong_size", "future_stamp", "stale"]
    assert controller.counters.chunks_rejected == 4 and controller.counters.chunks_accepted == 1
    assert controller.last_rejection[0].startswith("stale")
    executed = [s.sequence for c in cycles for s in c.executed]
    assert set(executed) == {1} and len(executed) == 10  # the good chunk ran to its end


def test_watchdog_decelerates_to_a_hold_and_e_stop_holds_at_once_until_resume():
    config = ControllerConfig(control_period=PERIOD, watchdog_timeout=0.2, hold_deceleration=0.1)
    controller = make_controller(config)
    horizon = 50  # a 1 s chunk moving 0.1 m/s, sent once: the policy then goes silent
    offsets = np.c_[np.linspace(0, 0.1, horizon), np.zeros((horizon, 2))]
    chunk = dict(stamp=0.0, dt=0.02, horizon=horizon, actions=chunk_actions(offsets), sequence=1)
    cycles, _ = run(controller, 0.0, 0.8, [(0.0, chunk)])
    arrived = cycles[0].time  # the cycle that took the chunk
    modes = {round(c.time, 3): c.mode for c in cycles}
    assert modes[round(arrived + 0.2, 3)] == Mode.EXECUTING
    assert modes[round(arrived + 0.2 + PERIOD, 3)] == Mode.HOLDING  # within watchdog_timeout + one period
    joints = np.array([c.joints for c in cycles])
    speed = np.abs(np.diff(joints, axis=0)).max(axis=(1, 2)) / PERIOD
    fired = int(round(0.2 / PERIOD)) + 1
    # It decelerates (no jump: never faster than before it fired) and holds after the ramp.
    assert speed[fired:].max() <= speed[fired - 5 : fired].max() + 1e-6
    stop = fired + int(round(0.1 / PERIOD)) + 2
    assert speed[stop:].max() < 1e-6
    assert controller.counters.watchdog_stops == 1 and controller.queue_depth == 0

    # E-stop mid-motion: the command freezes on the very next cycle, chunks are refused.
    controller = make_controller(config)
    frozen = {}

    def engage(cycle):
        if math.isclose(cycle.time, 0.3):
            controller.estop()
            frozen["joints"] = cycle.joints.copy()

    more = dict(stamp=0.35, dt=0.02, horizon=horizon, actions=chunk_actions(offsets * -1), sequence=2)
    cycles, rejections = run(
        controller, 0.0, 0.6, [(0.0, chunk), (0.15, dict(chunk, stamp=0.15, sequence=3)), (0.35, more)], on_cycle=engage
    )
    after = [c for c in cycles if c.time > 0.3 + 1e-9]
    assert all(c.mode == Mode.ESTOP and np.array_equal(c.joints, frozen["joints"]) for c in after)
    assert [r.reason for r in rejections] == ["estop"]
    controller.resume()
    cycles, rejections = run(controller, 0.6, 1.0, [(0.65, dict(more, stamp=0.65, sequence=4))])
    assert not rejections and [c.mode for c in cycles if math.isclose(c.time, 0.8)] == [Mode.EXECUTING]
    assert np.abs(np.diff([c.joints for c in cycles], axis=0)).max() <= JOINT_CAP.max() * PERIOD + 1e-9


def test_the_arms_never_come_closer_than_the_minimum_clearance():
    controller = make_controller(ControllerConfig(control_period=PERIOD, min_clearance=0.08, watchdog_timeout=5.0))
    # Each arm reaches 0.45 m sideways towards the other: through the space between them.
    horizon = 40
    left = np.c_[np.zeros(horizon), np.linspace(0, -0.45, horizon), np.zeros(horizon)]
    actions = chunk_actions(left)
    actions[:, 11] = -actions[:, 1]  # the right arm mirrors the left
    clearance = controller.clearance
    distances = []
    cycles, _ = run(
        controller,
        0.0,
        2.0,
        [(0.0, dict(stamp=0.0, dt=0.04, horizon=horizon, actions=actions))],
        on_cycle=lambda c: distances.append(clearance.distance(*c.joints)),
    )
    assert min(distances) >= 0.08 - 1e-9
    assert any("arms:clearance" in c.limits_hit for c in cycles)  # it was the clearance that stopped them


def test_the_clearance_is_exact_where_it_decides_and_a_bound_beyond_it():
    """The control cycle asks only whether the arms come within ``min_clearance``: beyond it,
    a bound from the boxes around the links answers (the 36 capsule pairs were most of a cycle
    when the arms are apart), and the commands are the same, cycle for cycle."""
    rng = np.random.default_rng(0)
    clearance = make_controller().clearance
    bounds = 0
    for _ in range(300):
        q_left, q_right = (HOME + rng.normal(0.0, 0.8, 6) for _ in range(2))
        exact = clearance.distance(q_left, q_right)
        for beyond in (0.05, 0.3):
            fast = clearance.distance(q_left, q_right, beyond=beyond)
            if fast != exact:
                assert beyond < fast <= exact + 1e-12, (fast, exact, beyond)
                bounds += 1
    assert bounds > 100  # the bound does answer

    class Exact(ArmClearance):
        def distance(self, q_first, q_second, beyond=None):
            return super().distance(q_first, q_second)

    horizon = 40
    left = np.c_[np.zeros(horizon), np.linspace(0, -0.45, horizon), np.zeros(horizon)]
    actions = chunk_actions(left)
    actions[:, 11] = -actions[:, 1]  # the arms reach towards each other until the clearance holds them
    joints = []
    for exact in (False, True):
        controller = make_controller(ControllerConfig(control_period=PERIOD, min_clearance=0.08, watchdog_timeout=5.0))
        if exact:
            controller.clearance = Exact(*controller.clearance.arms)
        cycles, _ = run(controller, 0.0, 2.0, [(0.0, dict(stamp=0.0, dt=0.04, horizon=horizon, actions=actions))])
        assert any("arms:clearance" in c.limits_hit for c in cycles)
        joints.append(np.array([c.joints for c in cycles]))
    assert np.array_equal(*joints)


def test_teleop_drives_through_the_same_safety_and_chunks_are_refused():
    controller = make_controller()
    controller.set_teleop(ScriptedTeleop({"left": HOME, "right": HOME}, start_time=0.0, period=2.0))
    offsets = np.zeros((10, 3))
    cycles, rejections = run(
        controller, 0.0, 1.0, [(0.5, dict(stamp=0.5, dt=0.05, horizon=10, actions=chunk_actions(offsets)))]
    )
    assert [r.reason for r in rejections] == ["teleop"]
    assert all(c.mode == Mode.TELEOP for c in cycles)
    joints = np.array([c.joints for c in cycles])
    assert np.abs(joints[-1] - HOME).max() > 0.2  # it moved
    assert (np.abs(np.diff(joints, axis=0)) <= JOINT_CAP * PERIOD + 1e-9).all()


def test_switching_source_while_chunks_arrive_is_bumpless_and_no_refused_chunk_is_ever_executed():
    """Issue 28 item 1: the policy streams a chunk every 0.1 s (a reach of 6 cm); teleop takes
    over at 1.0 s (a scripted motion) and hands back at 2.0 s. While teleop drives, every
    chunk is refused and none of them is executed later; the chunk in force at the takeover
    is dropped, not resumed; teleop's first command is the command in force; after the
    hand-back the policy's chunks drive again; no command moves faster than the caps."""
    from arx_r5_driver.controller import SwitchRefused

    controller = make_controller()
    teleop = ScriptedTeleop({"left": HOME, "right": HOME}, start_time=0.0, period=2.0)
    chunks = []
    for k in range(30):
        stamp = round(0.1 * k, 9)
        offsets = np.c_[np.linspace(0.002 * k, 0.002 * k + 0.03, 10), np.zeros((10, 2))]
        chunks.append(
            (stamp + 0.02, dict(stamp=stamp, dt=0.1, horizon=10, actions=chunk_actions(offsets), sequence=k + 1))
        )
    cycles, rejections = [], []
    events = {1.0: "take_over", 2.0: "hand_back"}
    t = 0.0
    for start, end in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0)):
        if start in events:
            before = controller.commands.copy()
            if events[start] == "take_over":
                controller.take_over(teleop, start)
                assert controller.control_source == "teleop" and controller.active_chunk is None
                first = teleop.targets(start)
                assert all(np.allclose(first[arm.name][0], before[a]) for a, arm in enumerate(controller.arms))
            else:
                controller.hand_back()
                assert controller.control_source == "policy"
        part, refused = run(controller, start, end, [c for c in chunks if start <= c[0] < end])
        cycles += part
        rejections += [(start, r) for r in refused]
        t = end
    modes = [c.mode for c in cycles]
    assert Mode.EXECUTING in modes[:200] and set(modes[200:400]) == {Mode.TELEOP} and Mode.EXECUTING in modes[400:]
    refused = {r.reason for start, r in rejections if start == 1.0}
    assert refused == {"teleop"} and sum(start == 1.0 for start, _ in rejections) == 10
    executed = {(step.sequence, step.due) for c in cycles for step in c.executed}
    refused_sequences = {k + 1 for k in range(10, 20)}
    assert not {seq for seq, _ in executed} & refused_sequences  # refused, never executed later
    assert not {seq for seq, due in executed if due > 1.0 and seq <= 10}  # the chunk in force was dropped
    joints = np.array([c.joints for c in cycles])
    assert (np.abs(np.diff(joints, axis=0)) <= JOINT_CAP * PERIOD + 1e-9).all()
    assert np.abs(joints[399] - joints[199]).max() > 0.1  # teleop moved the arms

    controller.estop()
    with pytest.raises(SwitchRefused, match="e-stop"):
        controller.take_over(teleop, t)
    assert controller.control_source == "policy"
    controller.resume()
    controller.take_over(teleop, t)
    controller.estop()
    with pytest.raises(SwitchRefused, match="e-stop"):
        controller.hand_back()
    assert controller.control_source == "teleop"


def test_homing_brings_both_arms_to_the_ready_pose_within_its_share_of_the_caps():
    """Issue 31 item 3: from wherever the arms are, homing moves every joint at no more than
    its share of the cap (here a quarter), arrives within 1e-3 rad of the ready pose when it
    said it would, and holds there; the source is named; e-stop refuses it."""
    from arx_r5_driver.controller import SwitchRefused
    from arx_r5_driver.teleop import Homing

    away = HOME + np.array([0.4, 0.3, -0.2, 0.5, -0.4, 0.6])
    controller = make_controller(initial=(away, HOME - 0.2))
    ready = {"left": HOME, "right": HOME}
    homing = Homing(ready, JOINT_CAP, 0.25)
    controller.take_over(homing, 0.0, "home")
    assert controller.control_source == "home"
    assert homing.duration == pytest.approx(1.5 * (0.6 / (0.25 * 3.0)))  # the slowest joint's travel
    cycles, _ = run(controller, 0.0, homing.duration + 0.5)
    joints = np.array([c.joints for c in cycles])  # (T, A, 6)
    speeds = np.abs(np.diff(joints, axis=0)) / PERIOD
    assert (speeds <= 0.25 * JOINT_CAP * (1 + 1e-6) + 1e-9).all(), (speeds / JOINT_CAP).max()
    assert np.abs(joints[-1] - HOME).max() < 1e-3 and not any(c.limits_hit for c in cycles)
    arrived = next(c.time for c in cycles if np.abs(c.joints - HOME).max() < 1e-3)
    assert 0.9 * homing.duration <= arrived <= homing.duration + PERIOD  # when it said, not at once
    controller.estop()
    with pytest.raises(SwitchRefused):
        controller.take_over(Homing(ready, JOINT_CAP, 0.25), cycles[-1].time, "home")
    with pytest.raises(ValueError, match="homing_speed"):
        Homing(ready, JOINT_CAP, 0.0)


def test_a_late_cycle_keeps_the_arms_speed_and_a_stall_never_becomes_a_jump():
    """Speed caps apply over the time since the previous cycle, up to ``max_cycle_period``:
    on a loaded machine the arms keep their pace (a teleop demo is not slowed down), and
    after a long stall the first command moves no further than that bound allows."""
    config = ControllerConfig(control_period=PERIOD, max_cycle_period=0.02)
    far = HOME + np.array([0.0, 0.0, 0.0, 0.6, 0.8, 1.8])  # J6 at its cap throughout, the flange barely moves

    class Hold:  # a teleop source asking for one far pose
        def targets(self, now):
            return {"left": (far, 0.04), "right": (far, 0.04)}

    rng = np.random.default_rng(0)
    gaps = [float(g) for g in rng.choice([0.002, 0.005, 0.011, 0.017, 0.2], 150, p=[0.2, 0.4, 0.2, 0.15, 0.05])]
    controller = make_controller(config)
    controller.set_teleop(Hold())
    cycles, _ = run(controller, 0.0, sum(gaps) - 1e-6, gaps=iter(gaps))
    times = np.array([0.0] + [c.time for c in cycles])
    joints = np.array([np.stack([HOME, HOME])] + [c.joints for c in cycles])  # (N + 1, 2, 6)
    allowed = np.minimum(np.diff(times), 0.02)[:, None, None] * JOINT_CAP  # (N, 1, 6)
    steps = np.abs(np.diff(joints, axis=0))  # (N, 2, 6)
    assert (steps <= allowed + 1e-9).all()
    # Late cycles while J6 is still far from its target: J6 steps at its cap over the gap
    # (a cap over the nominal period would give JOINT_CAP * PERIOD whatever the gap).
    j6_far = (np.abs(far[5] - joints[:-1, :, 5]) > 0.1).all(axis=1)  # (N,)
    late = (np.diff(times) >= 0.011) & j6_far
    late[0] = False  # the first cycle has no previous one to measure from: a nominal period
    assert late.sum() >= 5
    assert np.allclose(steps[late, :, 5], allowed[late, :, 5], rtol=1e-6)


ADVERSARIAL = st.sampled_from(
    ["random", "nan", "huge_jump", "outside_box", "unreachable", "wrong_size", "future", "past"]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kinds=st.lists(ADVERSARIAL, min_size=1, max_size=4), late_cycles=st.booleans())
def test_no_command_ever_leaves_the_limits_whatever_the_chunks(seed, kinds, late_cycles):
    rng = np.random.default_rng(seed)
    controller = make_controller()
    chunks = []
    for k, kind in enumerate(kinds):
        arrival = 0.05 + 0.12 * k
        horizon = 10
        offsets = rng.normal(0, 0.05, (horizon, 3)).cumsum(0)
        actions = chunk_actions(offsets, gripper=rng.uniform(-0.05, 0.15))
        stamp, size = arrival, horizon
        if kind == "nan":
            actions[rng.integers(horizon), rng.integers(20)] = rng.choice([np.nan, np.inf, -np.inf])
        elif kind == "huge_jump":
            actions[:, [0, 1, 2, 10, 11, 12]] += rng.uniform(-2, 2, 6)
        elif kind == "outside_box":
            actions[:, [0, 10]] = -0.3  # behind the arm's base
        elif kind == "unreachable":
            actions[:, [2, 12]] = 2.0
        elif kind == "wrong_size":
            size = horizon + 1
        elif kind == "future":
            stamp = arrival + rng.uniform(0.1, 10)
        elif kind == "past":
            stamp = arrival - rng.uniform(0.5, 10)
        elif kind == "random":
            actions = rng.uniform(-1, 1, actions.shape)
        chunks.append((arrival, dict(stamp=stamp, dt=0.05, horizon=size, actions=actions, sequence=k)))
    gaps = None
    if late_cycles:  # a loaded control loop: cycles early, late, and now and then stalled
        gaps = iter([float(g) for g in rng.choice([0.003, 0.005, 0.012, 0.05], 1000, p=[0.2, 0.5, 0.25, 0.05])])
    cycles, _ = run(controller, 0.0, 0.05 + 0.12 * len(kinds) + 0.3, chunks, gaps=gaps)
    kinematics = KINEMATICS["left"]
    previous, previous_time = np.stack([HOME, HOME]), 0.0
    for cycle in cycles:
        period = min(cycle.time - previous_time, controller.config.max_cycle_period)
        assert np.isfinite(cycle.joints).all()
        assert (cycle.joints >= kinematics.lower - 1e-12).all() and (cycle.joints <= kinematics.upper + 1e-12).all()
        assert (np.abs(cycle.joints - previous) <= JOINT_CAP * period + 1e-9).all()
        for a in range(2):
            before, _ = kinematics.fk(previous[a])
            after, _ = kinematics.fk(cycle.joints[a])
            assert np.linalg.norm(after - before) <= CARTESIAN_CAP * period + 1e-9
            outside = np.maximum(BOX[0] - after, 0) + np.maximum(after - BOX[1], 0)
            assert np.linalg.norm(outside) <= 1e-9  # it started inside the box and never left
        assert ((cycle.grippers >= 0) & (cycle.grippers <= 0.08)).all()
        previous, previous_time = cycle.joints, cycle.time
