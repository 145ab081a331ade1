"""The safety filter: whatever the target (NaN, huge jumps, out of the workspace,
unreachable), a command never leaves the joint limits or the workspace box and never moves
faster than the joint and Cartesian caps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arx_r5_driver.kinematics import ArmKinematics
from arx_r5_driver.safety import ArmLimits, SafetyFilter

PERIOD = 0.005  # 200 Hz
LIMITS = ArmLimits(
    max_joint_velocity=np.full(6, 2.0),
    max_cartesian_speed=0.5,
    workspace_min=[-0.1, -0.45, -0.05],
    workspace_max=[0.6, 0.45, 0.6],
)


@pytest.fixture(scope="module")
def safety():
    return SafetyFilter(ArmKinematics(), LIMITS, arm="left")


def _inside_start(arm, rng):
    while True:  # a start state within limits and inside the workspace
        q = rng.uniform(arm.lower, arm.upper)
        if SafetyFilter(arm, LIMITS)._outside(arm.fk(q)[0]) == 0:
            return q


def test_a_small_safe_step_passes_unchanged(safety):
    q = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.0])
    target = q + 0.001
    command, hit = safety.filter(q, target, PERIOD)
    np.testing.assert_array_equal(command, target)
    assert hit == []


def test_nonfinite_targets_hold(safety):
    q = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.0])
    for bad in (np.full(6, np.nan), np.r_[np.inf, np.zeros(5)], np.zeros(5)):
        command, hit = safety.filter(q, bad, PERIOD)
        np.testing.assert_array_equal(command, q)
        assert hit == ["left/nonfinite_target"]


def test_a_huge_jump_is_slowed_to_the_caps_and_reported(safety):
    q = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.0])
    command, hit = safety.filter(q, q + np.array([3.0, -3.0, 3.0, 3.0, 3.0, 3.0]), PERIOD)
    assert np.all(np.abs(command - q) <= LIMITS.max_joint_velocity * PERIOD + 1e-12)
    assert "left/joint_speed" in hit and any(h.endswith(":position") for h in hit)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["random", "huge", "nan", "near", "outside"]))
def test_no_command_ever_breaks_a_limit(seed, kind):
    arm = ArmKinematics()
    safety = SafetyFilter(arm, LIMITS)
    rng = np.random.default_rng(seed)
    q = _inside_start(arm, rng)
    for _ in range(20):  # a sequence of adversarial targets, each from the last command
        if kind == "random":
            target = rng.uniform(arm.lower - 1, arm.upper + 1)
        elif kind == "huge":
            target = q + rng.normal(0, 100, 6)
        elif kind == "nan":
            target = np.where(rng.random(6) < 0.3, np.nan, q + rng.normal(0, 0.1, 6))
        elif kind == "near":
            target = q + rng.normal(0, 0.02, 6)
        else:  # pulled towards a pose far out of the workspace
            target = q + np.sign(rng.normal(size=6)) * 0.5
        command, _ = safety.filter(q, target, PERIOD)
        assert np.all(command >= arm.lower) and np.all(command <= arm.upper)
        assert np.all(np.abs(command - q) <= LIMITS.max_joint_velocity * PERIOD + 1e-9)
        start, end = arm.fk(q)[0], arm.fk(command)[0]
        assert np.linalg.norm(end - start) <= LIMITS.max_cartesian_speed * PERIOD + 1e-9
        assert safety._outside(end) == 0
        q = command
