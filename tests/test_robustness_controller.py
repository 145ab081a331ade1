"""Bad input at the executor's controller, one test per finding of the reliability issue that
lives below the node: chunks that schedule nothing must not feed the watchdog, speed caps hold
at the moment commands are sent, an unreachable target is solved once, chunks that are too
long or carry unbounded strings are refused with a bounded reason, out-of-order and duplicate
chunks are refused."""

import numpy as np
import pytest
from test_controller import CARTESIAN_CAP, HOME, JOINT_CAP, KINEMATICS, PERIOD, chunk_actions, make_controller, run

from arx_r5_driver.chunks import ChunkRejected
from arx_r5_driver.controller import ControllerConfig, Mode
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES


def test_a_chunk_that_schedules_nothing_is_refused_and_does_not_feed_the_watchdog():
    controller = make_controller(ControllerConfig(control_period=PERIOD, watchdog_timeout=0.5))
    dt = 0.1
    long_plan = dict(
        stamp=0.0,
        dt=dt,
        horizon=40,
        actions=chunk_actions(np.c_[np.linspace(0, 0.08, 40), np.zeros((40, 2))]),
        sequence=1,
    )
    # Every 0.1 s, a chunk whose only future step is due within dt/2 of its arrival.
    feeders = [
        (t, dict(stamp=t - 0.97 * dt, dt=dt, horizon=1, actions=chunk_actions(np.zeros((1, 3))), sequence=2 + k))
        for k, t in enumerate(np.arange(0.1, 2.0, 0.1))
    ]
    cycles, rejections = run(controller, 0.0, 2.0, [(0.0, long_plan), *feeders])
    assert rejections and all(r.reason == "stale" for r in rejections)
    assert controller.counters.watchdog_stops == 1  # the 4 s plan was stopped 0.5 s after its chunk
    stopped_at = next(c.time for c in cycles if c.mode == Mode.HOLDING)
    assert stopped_at == pytest.approx(0.5, abs=0.02)


def test_speed_caps_hold_between_the_moments_commands_are_sent():
    """Cycles wake every 20 ms (a late loop), but one computes for 18 ms and the next sends at
    once: two commands leave 2 ms apart. Each may carry the motion of the time between the
    sends, not of the time between the wake-ups."""
    controller = make_controller(ControllerConfig(control_period=PERIOD, max_cycle_period=0.02))
    far = chunk_actions(np.tile([0.06, 0.0, 0.0], (20, 1)))
    controller.submit(stamp=0.0, dt=0.05, horizon=20, action_names=NAMES, actions=far, now=0.0)
    sends, commands = [], []
    for k in range(1, 61):
        woken = 0.02 * k
        sent = woken + (0.018 if k % 2 else 0.0)  # sends alternately 38 ms and 2 ms apart
        cycle = controller.step(woken, send_clock=lambda sent=sent: sent)
        sends.append(sent)
        commands.append(cycle.joints[0].copy())
        for arm in controller.arms:
            arm.backend.step(0.02)
    for k in range(1, len(commands)):
        interval = min(sends[k] - sends[k - 1], 0.02)  # max_cycle_period bounds a long one
        assert np.all(np.abs(commands[k] - commands[k - 1]) <= JOINT_CAP * interval + 1e-9), k
    start, _ = KINEMATICS["left"].fk(commands[0])
    end, _ = KINEMATICS["left"].fk(commands[-1])
    assert np.linalg.norm(end - start) > 0.05  # the arm still gets there


@pytest.mark.parametrize("load", ["quiet", "loaded"])
def test_speed_caps_hold_against_each_commands_own_publish_stamp(load):
    """Finding 3 of the adversarial-peer issue: the topic backend stamps each command when it
    publishes it, after the cycle read its clock and filtered both arms. The time between those
    two instants varies with load (the filtering's FK, the GIL); caps computed over the time
    between clock reads let two commands go out closer together than the motion between them
    allows. Measured by the commands' own stamps, every joint and the end effector stay within
    their caps."""
    rng = np.random.default_rng(0 if load == "quiet" else 1)
    controller = make_controller(ControllerConfig(control_period=PERIOD, max_cycle_period=0.02))
    far = chunk_actions(np.tile([0.10, 0.0, 0.05], (30, 1)))
    controller.submit(stamp=0.0, dt=0.05, horizon=30, action_names=NAMES, actions=far, now=0.0)
    clock = {"now": 0.0}
    stamps = {arm.name: [] for arm in controller.arms}
    commands = {arm.name: [] for arm in controller.arms}
    for arm in controller.arms:
        sent = arm.backend.command

        def publish(joints, gripper, name=arm.name, sent=sent):
            # Time passes between the cycle's clock read and each publish: the other arm's
            # filtering, a thread holding the GIL.
            clock["now"] += rng.uniform(0.0, 0.0005 if load == "quiet" else 0.012)
            stamps[name].append(clock["now"])
            commands[name].append(np.array(joints, float))
            sent(joints, gripper)

        arm.backend.command = publish

    def wait_until(instant):
        clock["now"] = max(clock["now"], instant)

    wake = 0.0
    while wake < 1.5:
        wake += PERIOD
        clock["now"] = max(clock["now"], wake)  # a loop that overran wakes late, never early
        before = clock["now"]
        controller.step(clock["now"], send_clock=lambda: clock["now"], wait_until=wait_until)
        for arm in controller.arms:
            arm.backend.step(clock["now"] - before + PERIOD)
    for arm in controller.arms:
        q, t = np.array(commands[arm.name]), np.array(stamps[arm.name])
        gaps = np.diff(t)
        joint_speed = np.abs(np.diff(q, axis=0)) / gaps[:, None]
        assert (joint_speed <= JOINT_CAP * (1 + 1e-6)).all(), (arm.name, (joint_speed / JOINT_CAP).max())
        positions = np.array([KINEMATICS[arm.name].fk(joints)[0] for joints in q])
        speed = np.linalg.norm(np.diff(positions, axis=0), axis=1) / gaps
        assert (speed <= CARTESIAN_CAP * (1 + 1e-6)).all(), (arm.name, speed.max())
    start, _ = KINEMATICS["left"].fk(commands["left"][0])
    end, _ = KINEMATICS["left"].fk(commands["left"][-1])
    assert np.linalg.norm(end - start) > 0.08  # the arm still gets there


def test_an_unreachable_target_is_solved_once_not_every_cycle(monkeypatch):
    controller = make_controller()
    position, rotation = KINEMATICS["left"].fk(HOME)
    unreachable = np.r_[position + [1.5, 0.0, 0.0], rotation[:, 0], rotation[:, 1], 0.04]  # 1.5 m out of reach
    reachable = np.r_[position, rotation[:, 0], rotation[:, 1], 0.04]
    actions = np.tile(np.r_[unreachable, reachable], (4, 1))
    controller.submit(stamp=0.0, dt=0.05, horizon=4, action_names=NAMES, actions=actions, now=0.0)
    calls = {"left": 0}
    original = KINEMATICS["left"].ik

    def counting(*args, **kwargs):
        calls["left"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(controller.arms[0].kinematics, "ik", counting)
    cycles, _ = run(controller, 0.0, 1.0)  # the trajectory ends at 0.2 s: 0.8 s holding at the target
    holding = [c for c in cycles if c.time > 0.25]
    assert all("left:unreachable" in c.limits_hit for c in holding)
    assert calls["left"] <= len(cycles) - len(holding) + 2  # IK ran while the setpoint moved, then once


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(horizon=50_000, actions=np.zeros((50_000, 20))), "too_long"),
        (dict(checkpoint_id="x" * 1_000_000), "too_long"),
        (dict(action_names=[f"unknown/{k}" for k in range(100_000)]), "unknown_layout"),
    ],
)
def test_oversized_chunks_are_refused_with_a_bounded_reason(change, reason):
    controller = make_controller()
    chunk = dict(stamp=0.0, dt=0.05, horizon=8, actions=chunk_actions(np.zeros((8, 3))), action_names=NAMES, now=0.0)
    chunk.update(change)
    with pytest.raises(ChunkRejected) as rejected:
        controller.submit(**chunk)
    assert rejected.value.reason == reason
    assert len(str(rejected.value)) <= 300 and len(controller.last_rejection[0]) <= 300


def test_out_of_order_and_duplicate_chunks_are_refused():
    controller = make_controller()

    def chunk(stamp, sequence):
        return dict(stamp=stamp, dt=0.05, horizon=8, actions=chunk_actions(np.zeros((8, 3))), sequence=sequence)

    _, rejections = run(
        controller,
        0.0,
        0.5,
        [
            (0.10, chunk(0.10, 5)),
            (0.15, chunk(0.10, 5)),  # duplicate
            (0.20, chunk(0.05, 6)),  # an older observation
            (0.25, chunk(0.25, 7)),
        ],
    )  # newer: taken
    assert [r.reason for r in rejections] == ["out_of_order", "out_of_order"]
    assert controller.active_chunk.sequence == 7
