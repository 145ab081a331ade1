"""The simulated arm: first-order approach to the command, within its velocity limits."""

import numpy as np

from arx_r5_driver.backends.sim import SimArm


def test_first_order_approach_within_velocity_limits():
    arm = SimArm(tau=0.05, max_velocity=2.0)
    arm.command(np.full(6, 0.01), gripper=0.04)
    for _ in range(200):  # 1 s at 200 Hz
        before = arm.read()[0]
        arm.step(0.005)
        assert np.all(np.abs(arm.read()[0] - before) <= 2.0 * 0.005 + 1e-12)
    joints, gripper = arm.read()
    np.testing.assert_allclose(joints, 0.01, atol=1e-6)
    assert abs(gripper - 0.04) < 1e-9


def test_a_far_command_is_reached_at_the_velocity_limit_and_holding_keeps_still():
    arm = SimArm(tau=0.05, max_velocity=1.0)
    arm.command(np.r_[1.0, np.zeros(5)], gripper=0.0)
    arm.step(0.1)
    assert abs(arm.read()[0][0] - 0.1) < 1e-9  # limited to 1 rad/s for 0.1 s
    arm.close()  # hold where it is
    held = arm.read()[0]
    arm.step(0.1)
    np.testing.assert_allclose(arm.read()[0], held)
    arm.gravity_compensation()
    arm.command(np.zeros(6), 0.0)
    assert not arm.compliant  # a command takes the arm back from compliance
