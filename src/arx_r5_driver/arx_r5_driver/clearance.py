"""Clearance between the two arms: each arm's links as capsules along its kinematic chain
(joint origin to joint origin, then the flange to the gripper's fingertips), in the world
frame, with the distances computed by coal (Pinocchio's collision library). The vendor's
URDF has no collision geometry, so the capsules are the geometry: a link radius that
covers the real links is part of the robot configuration. ROS-free."""

from __future__ import annotations

from itertools import product

import coal
import numpy as np
import pinocchio as pin

from .kinematics import ArmKinematics

# A bound is returned only this far beyond the threshold, so that comparing it or the exact
# distance with anything below the threshold (to within the controller's 1e-9) agrees.
BOUND_MARGIN = 1e-6


def _segment_transform(start: np.ndarray, end: np.ndarray) -> tuple[coal.Transform3s, float]:
    """The placement of a coal capsule (centred, along its z axis) spanning start -> end, and its length."""
    axis = end - start
    length = float(np.linalg.norm(axis))
    transform = coal.Transform3s()
    transform.setTranslation(0.5 * (start + end))
    if length > 1e-9:
        z = axis / length
        # Any frame whose z is the segment's axis: rotate z onto it by the shortest arc.
        transform.setRotation(pin.Quaternion.FromTwoVectors(np.array([0.0, 0.0, 1.0]), z).matrix())
    return transform, length


class ArmCapsules:
    """One arm's links as capsules of one radius, placed from its joint positions."""

    def __init__(self, kinematics: ArmKinematics, radius: float, tool_length: float):
        self.kinematics = kinematics
        self.radius = radius
        self.tool_length = tool_length

    def points(self, q: np.ndarray) -> np.ndarray:
        """(7, 3): the capsules' end points in the world frame, base to fingertips."""
        model, data = self.kinematics.model, self.kinematics.data
        pin.forwardKinematics(model, data, np.asarray(q, float))
        base = self.kinematics.base_in_world
        points = [(base * data.oMi[j]).translation for j in range(1, model.njoints)]  # joint1 .. joint6 origins
        flange = base * data.oMi[model.njoints - 1]
        # The gripper extends along the flange's x axis (the R5's approach direction).
        points.append(flange.translation + self.tool_length * flange.rotation[:, 0])
        return np.array(points)


class ArmClearance:
    """The smallest distance between the surfaces of two arms' link capsules."""

    def __init__(self, first: ArmCapsules, second: ArmCapsules):
        self.arms = (first, second)
        self._request = coal.DistanceRequest()
        self._result = coal.DistanceResult()

    def distance(self, q_first: np.ndarray, q_second: np.ndarray, beyond: float | None = None) -> float:
        """Metres between the closest links (negative: the capsules overlap). With ``beyond``:
        where the boxes around the two arms' links are already further apart than that, a lower
        bound of the distance that exceeds ``beyond`` (what a check against ``beyond`` needs),
        without the 36 capsule pairs (most of a control cycle's time when the arms are apart)."""
        points = [arm.points(q) for arm, q in zip(self.arms, (q_first, q_second))]  # 2 x (7, 3)
        if beyond is not None:
            (low_a, high_a), (low_b, high_b) = ((p.min(0), p.max(0)) for p in points)
            gap = np.maximum(0.0, np.maximum(low_b - high_a, low_a - high_b))  # (3,) between the boxes
            bound = float(np.linalg.norm(gap)) - self.arms[0].radius - self.arms[1].radius
            if bound > beyond + BOUND_MARGIN:
                return bound
        placed = [
            [
                (coal.Capsule(arm.radius, length), transform)
                for transform, length in (_segment_transform(s, e) for s, e in zip(p[:-1], p[1:]))
            ]
            for arm, p in zip(self.arms, points)
        ]
        best = np.inf
        for (shape_a, pose_a), (shape_b, pose_b) in product(*placed):
            self._result.clear()
            best = min(best, coal.distance(shape_a, pose_a, shape_b, pose_b, self._request, self._result))
        return float(best)
