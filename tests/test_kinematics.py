"""ARX R5 kinematics on ARX's URDF: limits from the manual, IK round trips, the gripper."""

import subprocess
import sys

import numpy as np
import pytest

from arx_r5_driver.kinematics import (
    R5_JOINT_LIMITS,
    ArmKinematics,
    gripper_to_sdk,
    sdk_to_gripper,
    vendor_urdf,
)


@pytest.fixture(scope="module")
def arm():
    return ArmKinematics()


def test_the_urdf_is_read_from_the_vendor_package_without_importing_it():
    code = (
        "import sys; from arx_r5_driver.kinematics import vendor_urdf; p = vendor_urdf(); "
        "assert p.name == 'R5_master.urdf' and p.is_file(); assert 'arx_r5_sdk' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert "<robot" in vendor_urdf().read_text()


def test_joint_limits_are_the_manuals_not_the_urdfs_placeholders(arm):
    np.testing.assert_array_equal(arm.lower, [lo for lo, _ in R5_JOINT_LIMITS.values()])
    np.testing.assert_array_equal(arm.upper, [hi for _, hi in R5_JOINT_LIMITS.values()])
    assert arm.model.upperPositionLimit.max() < 3.0  # the URDF says 10


def test_ik_round_trip_over_random_reachable_poses(arm):
    """FK(IK(pose)) within 1 mm and 0.01 rad, seeded from a nearby state as the executor is."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.uniform(arm.lower, arm.upper)
        position, rotation = arm.fk(q)
        result = arm.ik(position, rotation, seed=np.clip(q + rng.uniform(-0.3, 0.3, 6), arm.lower, arm.upper))
        assert result.success
        reached_position, reached_rotation = arm.fk(result.q)
        assert np.linalg.norm(reached_position - position) < 1e-3
        angle = np.arccos(np.clip((np.trace(reached_rotation.T @ rotation) - 1) / 2, -1, 1))
        assert angle < 0.01
        assert arm.within_limits(result.q)


def test_unreachable_pose_fails_and_stays_within_limits(arm):
    result = arm.ik(np.array([2.0, 0.0, 0.5]), np.eye(3), seed=np.zeros(6))
    assert not result.success and result.position_error > 1.0
    assert arm.within_limits(result.q)


def test_base_pose_places_the_arm_in_the_world():
    left = ArmKinematics(base_xyz=(0.0, 0.3, 0.0))
    right = ArmKinematics(base_xyz=(0.0, -0.3, 0.0), base_rpy=(0.0, 0.0, np.pi))
    q = np.zeros(6)
    position, _ = left.fk(q)
    np.testing.assert_allclose(left.fk_world(q)[0], position + [0.0, 0.3, 0.0])
    np.testing.assert_allclose(right.fk_world(q)[0], [-position[0], -0.3 - position[1], position[2]], atol=1e-9)


def test_gripper_opening_maps_to_the_sdk_range():
    assert gripper_to_sdk(0.0) == 0.0 and gripper_to_sdk(0.08) == 5.0 and gripper_to_sdk(0.04) == 2.5
    assert gripper_to_sdk(0.5) == 5.0 and gripper_to_sdk(-1.0) == 0.0  # clamped
    assert sdk_to_gripper(2.5) == pytest.approx(0.04)
