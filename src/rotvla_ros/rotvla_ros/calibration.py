"""Camera and arm-command latency from one commanded motion, measured on the running system
(UMI's and Diffusion Policy's way: a known motion observed in the joint readings and in the
wrist camera's view). ROS-free; ``nodes/calibrate_latency.py`` runs it on the robot or the
simulated cell.

One arm's end effector swings along one axis of its base frame, ``amplitude`` x sin(2 pi f t)
under a raised-cosine envelope (``Excitation``), commanded as action chunks the executor
schedules like a policy's. Three signals of the same motion, compared over the steady part
(the envelope at 1) by the lag that best explains one by the other (``best_lag``):

- the reference: where the chunks say the hand should be at each time;
- the measured end-effector position (the executor's forward kinematics of the joint readings,
  stamped when read): it lags the reference by the arm's command-to-motion latency less the
  compensation the executor already applies (it sends each step ``latency.camera +
  latency.arm_command`` early);
- the wrist camera's view, reduced to a few numbers per frame (its first principal
  components): it lags the measured position by the camera's exposure-to-stamp latency.

A periodic motion tells delays apart only within half a period, and an image's relation to a
position has no known sign: the delays must lie within a quarter period (0.5 s at 0.5 Hz) of
zero, as a camera's and an arm's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Excitation:
    """The commanded motion: an offset along ``axis`` of one arm's base frame."""

    arm: str = "left"
    axis: int = 1  # 0 x, 1 y, 2 z
    amplitude: float = 0.02  # m
    frequency: float = 0.5  # Hz
    periods: int = 6  # at full amplitude, what is fitted
    ramp_periods: int = 1  # raised-cosine fade in and out, so that the hand starts and ends at rest

    def __post_init__(self):
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (x, y, z), not {self.axis}")
        if not (0.0 < self.amplitude <= 0.05):
            raise ValueError(f"amplitude must be in (0, 0.05] m, not {self.amplitude}")
        if not (0.1 <= self.frequency <= 2.0):
            raise ValueError(f"frequency must be in [0.1, 2] Hz, not {self.frequency}")
        if self.periods < 2 or self.ramp_periods < 1:
            raise ValueError("at least 2 periods at full amplitude and 1 of ramp")

    @property
    def period(self) -> float:
        return 1.0 / self.frequency

    @property
    def duration(self) -> float:
        return (self.periods + 2 * self.ramp_periods) * self.period

    @property
    def steady(self) -> tuple[float, float]:
        """The span (s from the start) at full amplitude: the fitted one."""
        start = self.ramp_periods * self.period
        return start, start + self.periods * self.period

    def offset(self, t: np.ndarray | float) -> np.ndarray:
        """Displacement (m) along the axis at ``t`` s from the start; 0 before and after."""
        t = np.asarray(t, dtype=np.float64)
        ramp = self.ramp_periods * self.period
        envelope = np.clip(np.minimum(t, self.duration - t) / ramp, 0.0, 1.0)
        envelope = 0.5 - 0.5 * np.cos(np.pi * envelope)
        return self.amplitude * envelope * np.sin(2.0 * np.pi * self.frequency * t)


def best_lag(t: np.ndarray, signal: np.ndarray, reference, max_lag: float, step: float = 5e-4) -> tuple[float, float]:
    """How long (s) ``signal`` sampled at ``t`` lags ``reference`` (a function of time): the lag
    d in [-max_lag, max_lag] at which signal and ``reference(t - d)`` agree best, refined
    between grid points by a parabola. Returns (d, R^2). Both are the same motion, so whatever
    its shape (a servo's response is no pure sinusoid), the best lag is their delay.

    A signal (N,) is a position: ``reference(t - d)`` explains it by a positive gain, an offset
    and a slow drift. Features (N, k) (an image's principal components, whose relation to a
    position is neither linear nor of known sign) explain ``reference(t - d)`` by any linear
    map of them, an offset and a drift."""
    t, signal = np.asarray(t, np.float64), np.asarray(signal, np.float64)
    if len(t) < 8 + (signal.shape[1] if signal.ndim == 2 else 0):
        raise ValueError(f"{len(t)} samples: too few to fit")
    lags = np.arange(-max_lag, max_lag + step / 2, step)
    extra = np.stack([np.ones_like(t), t - t.mean()], axis=1)  # (N, 2): offset and drift
    scores = np.full(len(lags), -np.inf)
    for k, lag in enumerate(lags):
        shifted = reference(t - lag)  # (N,)
        if signal.ndim == 1:
            design, target = np.concatenate([shifted[:, None], extra], axis=1), signal
        else:
            design, target = np.concatenate([signal, extra], axis=1), shifted
        coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
        if signal.ndim == 1 and coefficients[0] <= 0:
            continue  # the command and the arm move the same way
        spread = np.sum((target - target.mean()) ** 2)
        scores[k] = 1.0 - np.sum((target - design @ coefficients) ** 2) / spread if spread > 0 else 0.0
    k = int(np.argmax(scores))
    lag = lags[k]
    if 0 < k < len(lags) - 1 and np.isfinite(scores[k - 1 : k + 2]).all():
        before, at, after = scores[k - 1 : k + 2]
        curvature = before - 2 * at + after
        if curvature < 0:
            lag += step * 0.5 * (before - after) / curvature
    return float(lag), float(scores[k])


def image_features(frames: np.ndarray, components: int = 4, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """(N, H, W, 3) uint8 frames of a moving camera -> (N, components): their first principal
    components on a coarse grey grid, which together follow the camera's motion."""
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    rows, cols = size
    if h < rows or w < cols:
        raise ValueError(f"frames of {w}x{h} are smaller than the {cols}x{rows} grid")
    grey = frames[..., :3].astype(np.float32).mean(-1)  # (N, H, W)
    grey = grey[:, : h - h % rows, : w - w % cols]
    grey = grey.reshape(n, rows, grey.shape[1] // rows, cols, grey.shape[2] // cols).mean((2, 4))  # (N, rows, cols)
    flat = grey.reshape(n, -1)
    flat = flat - flat.mean(0)
    _, _, basis = np.linalg.svd(flat, full_matrices=False)
    return flat @ basis[:components].T  # (N, components)


def _between_close_samples(times: np.ndarray, sample_times: np.ndarray) -> np.ndarray:
    """(M,) bool: each time falls between two samples no further apart than three of their
    usual spacing, where interpolating between them is good (a busy machine drops samples)."""
    sample_times = np.sort(sample_times)
    spacing = np.diff(sample_times)
    if spacing.size == 0:
        return np.zeros(len(times), dtype=bool)
    right = np.clip(np.searchsorted(sample_times, times), 1, len(sample_times) - 1)
    return spacing[right - 1] <= 3.0 * np.median(spacing)


@dataclass(frozen=True)
class LatencyEstimate:
    camera: float  # s, exposure to image stamp
    arm_command: float  # s, command sent to motion of the arm
    arm_r2: float  # how well the lagged command explains the measured motion
    camera_r2: float  # how well the lagged measured motion explains the image signal
    samples: tuple[int, int]  # (measured positions, frames) in the fitted span


def estimate(
    excitation: Excitation,
    start: float,
    pose_times: np.ndarray,
    positions: np.ndarray,
    frame_times: np.ndarray,
    frames: np.ndarray,
    compensation: float,
) -> LatencyEstimate:
    """The latencies from one run. ``start``: the clock time the excitation began (the command
    at time t is ``excitation.offset(t - start)``); ``positions`` (N,) the measured end effector
    along the axis at ``pose_times`` (N,); ``frames`` (M, H, W, 3) the moving arm's wrist camera
    at ``frame_times`` (M,); ``compensation``: what the executor already sends early (its
    latency.camera + latency.arm_command), s."""
    first, last = (start + s for s in excitation.steady)
    reach = excitation.period / 4.0  # the largest delay told apart from its neighbour by half a period
    # Fitted where every signal, however delayed, is at full amplitude.
    poses = (pose_times >= first + reach) & (pose_times <= last)
    shots = (frame_times >= first + reach) & (frame_times <= last) & _between_close_samples(frame_times, pose_times)
    if poses.sum() < 8 or shots.sum() < 8:
        raise ValueError(
            f"only {int(poses.sum())} measured poses and {int(shots.sum())} frames in the fitted span: "
            "are the arm's pose and the wrist camera being published?"
        )
    order = np.argsort(pose_times)
    pose_times, positions = np.asarray(pose_times, np.float64)[order], np.asarray(positions, np.float64)[order]
    arm_lag, arm_r2 = best_lag(pose_times[poses], positions[poses], lambda t: excitation.offset(t - start), reach)
    camera, camera_r2 = best_lag(
        frame_times[shots], image_features(frames[shots]), lambda t: np.interp(t, pose_times, positions), reach
    )
    return LatencyEstimate(
        camera=camera,
        arm_command=arm_lag + compensation,
        arm_r2=arm_r2,
        camera_r2=camera_r2,
        samples=(int(poses.sum()), int(shots.sum())),
    )
