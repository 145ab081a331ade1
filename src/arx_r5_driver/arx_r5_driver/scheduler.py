"""Chunk scheduling in the action space (per arm: xyz, rotation, gripper), ROS-free.

- A chunk's steps become knots at their due times (``chunks.Chunk.future_steps``): steps
  already past are dropped, so they are never executed.
- A new chunk replaces the trajectory from its first future step. Over the first
  ``overlap`` of its steps it is blended with the trajectory it replaces (smoothstep weights;
  positions linearly, rotations by SLERP on SO(3), never linearly in 6D), and the trajectory
  starts from the command in force at that moment, with its velocity: position and velocity
  stay continuous across the seam.
- Between knots the trajectory is a C1 cubic Hermite spline (Catmull-Rom tangents), sampled
  at the control rate; rotations are interpolated the same way in the tangent space of the
  seam's rotation (log map), which is exact for the motions a chunk spans (< pi).
- The last knot has zero velocity: when the queue runs dry the arm decelerates into a hold
  at the last target, it never jumps.
- ``stop`` (the watchdog's) replaces the trajectory by a deceleration from the setpoint in
  force, with its velocity, to rest over a given time (velocity falls linearly to zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from rotvla_common.action_space import GRIPPER_FIELD, POSITION_FIELDS, ROT6D_FIELDS

from .chunks import Chunk


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) first two columns -> (..., 3, 3) by Gram-Schmidt (numpy twin of
    rotvla_ros.model.so_n.rot6d_to_matrix: the driver does not depend on torch)."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def right_jacobian(rotvec: np.ndarray) -> np.ndarray:
    """(A, 3) -> (A, 3, 3): J_r with body angular velocity = J_r(r) dr/dt for R = exp(r)."""
    out = np.empty(rotvec.shape[:-1] + (3, 3))
    for a, r in enumerate(rotvec):
        theta = np.linalg.norm(r)
        k = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
        if theta < 1e-6:
            out[a] = np.eye(3) - 0.5 * k
        else:
            out[a] = np.eye(3) - (1 - np.cos(theta)) / theta**2 * k + (theta - np.sin(theta)) / theta**3 * k @ k
    return out


@dataclass(frozen=True)
class ActionLayout:
    """Where each arm's xyz, Rotate6D and gripper sit in an action vector."""

    arms: tuple[str, ...]
    xyz: tuple[tuple[int, int, int], ...]
    rot6d: tuple[tuple[int, ...], ...]
    gripper: tuple[int, ...]

    @classmethod
    def from_names(cls, names: tuple[str, ...]) -> ActionLayout:
        arms = tuple(dict.fromkeys(n.split("/")[0] for n in names))
        index = {n: i for i, n in enumerate(names)}
        try:
            return cls(
                arms,
                tuple(tuple(index[f"{a}/{k}"] for k in POSITION_FIELDS) for a in arms),
                tuple(tuple(index[f"{a}/{k}"] for k in ROT6D_FIELDS) for a in arms),
                tuple(index[f"{a}/{GRIPPER_FIELD}"] for a in arms),
            )
        except KeyError as missing:
            raise ValueError(f"action layout lacks {missing}") from None

    def split(self, actions: np.ndarray) -> tuple[np.ndarray, Rotation]:
        """(K, D) actions -> linear part (K, A, 4) [x y z gripper] and rotations (K*A)."""
        linear = np.stack([np.c_[actions[:, list(x)], actions[:, g]] for x, g in zip(self.xyz, self.gripper)], axis=1)
        matrices = np.stack([rot6d_to_matrix(actions[:, list(r)]) for r in self.rot6d], axis=1)  # (K, A, 3, 3)
        return linear, Rotation.from_matrix(matrices.reshape(-1, 3, 3))


@dataclass
class Setpoint:
    """The command in action space at one instant, per arm."""

    linear: np.ndarray  # (A, 4): x y z gripper
    linear_velocity: np.ndarray  # (A, 4)
    rotation: Rotation  # A rotations
    angular_velocity: np.ndarray  # (A, 3), rad/s in each end effector's own frame (body)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def _hermite(t: float, t0, t1, p0, p1, m0, m1):
    """Value and derivative of the cubic Hermite segment at t."""
    h = t1 - t0
    s = (t - t0) / h
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
    value = h00 * p0 + h10 * h * m0 + h01 * p1 + h11 * h * m1
    derivative = (d00 * p0 + d10 * h * m0 + d01 * p1 + d11 * h * m1) / h
    return value, derivative


class ChunkScheduler:
    def __init__(self, layout: ActionLayout, overlap_steps: int = 8, latency_compensation: float = 0.0):
        self.layout = layout
        self.overlap_steps = overlap_steps
        self.latency_compensation = latency_compensation
        self.arms = len(layout.arms)
        self._times: np.ndarray | None = None  # (K,)
        self._values: np.ndarray | None = None  # (K, A, 7): x y z gripper | rotvec about the anchor
        self._tangents: np.ndarray | None = None  # (K, A, 7)
        self._anchor: Rotation | None = None  # A rotations

    @property
    def active(self) -> bool:
        return self._times is not None

    def end_time(self) -> float:
        return float(self._times[-1]) if self.active else float("-inf")

    def submit(self, chunk: Chunk, now: float, current: Setpoint | None = None) -> int:
        """Replace the trajectory with ``chunk`` from its first future step, blended, starting
        at the setpoint in force at ``now`` (this scheduler's own, once it has a trajectory;
        before that ``current``, the arms' measured state); returns the number of future
        steps taken (0: nothing changes)."""
        if self.active:
            current = self.sample(now)
        elif current is None:
            raise ValueError("the first chunk needs the current state to start from")
        times, actions = chunk.future_steps(now, self.latency_compensation)
        # A step due within half a period of now would make a segment too short to bend
        # smoothly from the current velocity: the start of the trajectory stands in for it.
        keep = times >= now + 0.5 * chunk.dt
        times, actions = times[keep], actions[keep]
        if len(times) == 0:
            return 0
        linear, rotations = self.layout.split(actions)  # (K, A, 4), K*A rotations
        rotations = rotations.as_matrix().reshape(len(times), self.arms, 3, 3)
        overlap = min(self.overlap_steps, len(times))
        if self.active and overlap:
            weights = _smoothstep(np.arange(1, overlap + 1) / (overlap + 1))
            for k in range(overlap):
                old = self.sample(times[k])
                w = weights[k]
                linear[k] = (1 - w) * old.linear + w * linear[k]
                for a in range(self.arms):
                    pair = Rotation.from_matrix(np.stack([old.rotation[a].as_matrix(), rotations[k, a]]))
                    rotations[k, a] = Slerp([0.0, 1.0], pair)(w).as_matrix()
        anchor = current.rotation
        anchor_inv = anchor.inv()
        rotvecs = np.stack(
            [(anchor_inv[a] * Rotation.from_matrix(rotations[:, a])).as_rotvec() for a in range(self.arms)], axis=1
        )  # (K, A, 3)
        values = np.concatenate([linear, rotvecs], axis=2)  # (K, A, 7)
        start = np.concatenate([current.linear, np.zeros((self.arms, 3))], axis=1)[None]  # (1, A, 7)
        self._times = np.r_[now, times]
        self._values = np.concatenate([start, values], axis=0)
        self._anchor = anchor
        tangents = np.gradient(self._values, self._times, axis=0)  # Catmull-Rom-like interior tangents
        # At the anchor the rotation vector is 0, where J_r = I: the tangent is the body rate.
        tangents[0] = np.concatenate([current.linear_velocity, current.angular_velocity], axis=1)
        tangents[-1] = 0.0  # decelerate into a hold at the last target
        self._tangents = tangents
        return len(times)

    def stop(self, now: float, duration: float) -> None:
        """Decelerate from the setpoint at ``now`` to a hold over ``duration`` seconds."""
        if not self.active:
            return
        current = self.sample(now)
        # A Hermite segment from (p, v) to (p + v T / 2, 0) has velocity v (1 - s): a linear ramp.
        start = np.concatenate([current.linear, np.zeros((self.arms, 3))], axis=1)  # (A, 7) about the new anchor
        velocity = np.concatenate([current.linear_velocity, current.angular_velocity], axis=1)  # (A, 7)
        self._anchor = current.rotation
        self._times = np.array([now, now + duration])
        self._values = np.stack([start, start + 0.5 * duration * velocity])
        self._tangents = np.stack([velocity, np.zeros_like(velocity)])

    def reset(self) -> None:
        """Forget the trajectory: the next chunk starts from the state it is given."""
        self._times = self._values = self._tangents = self._anchor = None

    def sample(self, t: float) -> Setpoint:
        """The setpoint at time t (held at the ends of the trajectory)."""
        if not self.active:
            raise RuntimeError("no trajectory: submit a chunk first")
        times = self._times
        if t <= times[0]:
            value, derivative = self._values[0], self._tangents[0]
        elif t >= times[-1]:
            value, derivative = self._values[-1], np.zeros_like(self._values[-1])
        else:
            i = int(np.searchsorted(times, t, side="right")) - 1
            value, derivative = _hermite(
                t,
                times[i],
                times[i + 1],
                self._values[i],
                self._values[i + 1],
                self._tangents[i],
                self._tangents[i + 1],
            )
        rotvec = value[:, 4:]
        rotation = Rotation.from_rotvec(rotvec)
        body_rate = np.einsum("aij,aj->ai", right_jacobian(rotvec), derivative[:, 4:])
        return Setpoint(
            linear=value[:, :4].copy(),
            linear_velocity=derivative[:, :4].copy(),
            rotation=self._anchor * rotation,  # (A,) composed arm by arm
            angular_velocity=body_rate,
        )
