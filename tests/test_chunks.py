"""Executor-side chunk validation (whole chunks rejected with a reason) and step timing."""

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from arx_r5_driver.chunks import (
    BAD_PERIOD,
    DEGENERATE_ROTATION,
    FUTURE_STAMP,
    NAN_OR_INF,
    OUT_OF_RANGE,
    STALE,
    UNKNOWN_LAYOUT,
    WRONG_SIZE,
    ChunkRejected,
    validate_chunk,
)
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES

H, D = 8, len(NAMES)
ROTATION_COLUMNS = [i for i, n in enumerate(NAMES) if n.split("/")[1] in ("r11", "r21", "r31", "r12", "r22", "r32")]
IDENTITY_6D = np.array([1.0, 0, 0, 0, 1.0, 0] * 2)


def with_identity(actions: np.ndarray) -> np.ndarray:
    """(H*D,) actions with every step's Rotate6D set to the identity."""
    steps = np.array(actions, dtype=float).reshape(-1, D)
    steps[:, ROTATION_COLUMNS] = IDENTITY_6D
    return steps.ravel()


def _args(**change):
    args = dict(
        stamp=10.0,
        dt=0.05,
        horizon=H,
        action_names=NAMES,
        actions=with_identity(np.zeros(H * D)),
        expected_names=NAMES,
        now=10.1,
        latency_compensation=0.02,
    )
    args.update(change)
    return args


def test_a_good_chunk_is_accepted_with_its_step_times():
    actions = with_identity(np.arange(H * D, dtype=float) / 100)
    chunk = validate_chunk(**_args(actions=actions))
    assert (
        chunk.actions.shape == (H, D) and chunk.actions[1, 0] == D / 100 and chunk.actions[1, 1] == (D + 1) / 100
    )  # row-major
    np.testing.assert_allclose(
        chunk.due_times(0.02), 10.02 + 0.05 * np.arange(1, H + 1)
    )  # the contract: step i at (i + 1) dt


def test_only_future_steps_are_returned_in_order():
    chunk = validate_chunk(**_args())
    times, actions = chunk.future_steps(now=10.1, latency_compensation=0.02)
    # Step 0 was due at 10.07 and has passed at 10.1; the rest remain, in order.
    np.testing.assert_allclose(times, 10.02 + 0.05 * np.arange(2, H + 1))
    assert len(actions) == H - 1 and np.all(np.diff(times) > 0)


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(action_names=NAMES[:10]), UNKNOWN_LAYOUT),
        (dict(action_names=NAMES[10:] + NAMES[:10]), UNKNOWN_LAYOUT),
        (dict(action_names=tuple(n.replace("left", "third") for n in NAMES)), UNKNOWN_LAYOUT),
        (dict(actions=np.zeros(H * D - 1)), WRONG_SIZE),
        (dict(horizon=0, actions=np.zeros(0)), WRONG_SIZE),
        (dict(actions=np.r_[np.zeros(H * D - 1), np.nan]), NAN_OR_INF),
        (dict(actions=np.r_[np.inf, np.zeros(H * D - 1)]), NAN_OR_INF),
        (dict(actions=np.where(np.arange(H * D) == 3, 1e30, with_identity(np.zeros(H * D)))), OUT_OF_RANGE),
        (dict(actions=np.where(np.arange(H * D) == 0, -150.0, with_identity(np.zeros(H * D)))), OUT_OF_RANGE),
        (dict(dt=0.0), BAD_PERIOD),
        (dict(dt=float("nan")), BAD_PERIOD),
        (dict(stamp=10.5), FUTURE_STAMP),
        (dict(stamp=float("nan")), FUTURE_STAMP),
        (dict(stamp=5.0), STALE),
        (dict(actions=np.zeros(H * D)), DEGENERATE_ROTATION),
        (dict(actions=np.where(np.arange(H * D) == D + 17, 0.0, with_identity(np.zeros(H * D)))), DEGENERATE_ROTATION),
    ],
)
def test_untrusted_chunks_are_rejected_whole_with_a_reason(change, reason):
    with pytest.raises(ChunkRejected) as rejected:
        validate_chunk(**_args(**change))
    assert rejected.value.reason == reason and str(rejected.value).startswith(reason)


ACCEPTED = []


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_whatever_arrives_either_validates_fully_or_is_rejected(data):
    """Property: an accepted chunk is finite, of the right shape, not from the future, and
    has a step left to execute; anything else raises ChunkRejected and nothing else. Each
    fault is drawn on its own, so that valid chunks and every fault are exercised."""

    def fault() -> bool:  # each fault in one draw out of four
        return data.draw(st.integers(0, 3)) == 0

    horizon = data.draw(st.integers(1, 2 * H), label="horizon")
    size = horizon * D + (data.draw(st.sampled_from([-1, 1, -D])) if fault() else 0)
    values = data.draw(st.lists(st.floats(-10, 10), min_size=size, max_size=size), label="values")
    if size % D == 0 and not fault():  # valid rotations, unless this fault is drawn
        values = list(with_identity(np.asarray(values)))
    if fault() and values:
        values[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    dt = data.draw(
        st.one_of(st.floats(-1, 0), st.floats(1.001, 5), st.just(float("nan"))) if fault() else st.floats(0.001, 1.0),
        label="dt",
    )
    stamp = 10.1 + data.draw(
        st.one_of(st.floats(-100, -0.3), st.floats(0.06, 10)) if fault() else st.floats(-0.3, 0.04),
        label="stamp offset",
    )
    try:
        chunk = validate_chunk(**_args(actions=np.asarray(values), horizon=horizon, stamp=stamp, dt=dt))
    except ChunkRejected as rejected:
        event(f"rejected: {rejected.reason}")
        return
    event("accepted")
    ACCEPTED.append(1)
    assert chunk.actions.shape == (horizon, D) and np.isfinite(chunk.actions).all()
    columns = chunk.actions[:, ROTATION_COLUMNS].reshape(horizon, 2, 2, 3)  # (H, arm, column, xyz)
    assert (np.linalg.norm(np.cross(columns[:, :, 0], columns[:, :, 1]), axis=-1) > 0).all()
    assert chunk.stamp <= 10.1 + 0.05 and 0 < chunk.dt <= 1.0
    assert len(chunk.future_steps(10.1, 0.02)[0]) > 0


def test_the_property_test_exercises_accepted_chunks():
    """Its assertions only mean something if valid chunks are generated: run it, count them."""
    ACCEPTED.clear()
    test_whatever_arrives_either_validates_fully_or_is_rejected()
    assert len(ACCEPTED) > 30
