"""Action chunks as the executor receives them: validation, whole or not at all, and the time
at which each step is due. ROS-free: the executor node passes the message's fields.

A chunk computed from an observation captured at ``stamp`` has step ``i`` (0-based) due at
``stamp + latency_compensation + (i + 1) * dt``: the contract's rule
(``rotvla_common.contract``), the one the converter's ``action[k] = state[k + 1]`` follows.
A chunk is rejected whole, with a reason, when it cannot be trusted: an action layout the
executor does not know, a size that does not match its horizon and layout, NaN or inf
anywhere, a non-positive or absurd step period, a Rotate6D that is no rotation (a zero
column, or two parallel ones: Gram-Schmidt would divide by zero), a stamp from the future
(beyond a clock tolerance), no step left in the future, more steps than ``max_horizon`` or a
checkpoint id longer than ``max_text``.
Details echoed back (in the status, the log, /diagnostics) are bounded in length whatever the
chunk carried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rotvla_common.action_space import ROT6D_FIELDS
from rotvla_common.contract import step_due_times
from rotvla_common.text import bounded

# Reasons, as they appear in ExecutorStatus.last_rejection_reason (followed by details).
UNKNOWN_LAYOUT = "unknown_layout"
WRONG_SIZE = "wrong_size"
NAN_OR_INF = "nan_or_inf"
BAD_PERIOD = "bad_period"
FUTURE_STAMP = "future_stamp"
STALE = "stale"
DEGENERATE_ROTATION = "degenerate_rotation"
TOO_LONG = "too_long"
TOO_LARGE = "too_large"
UNKNOWN_SOURCE = "unknown_source"
OUT_OF_ORDER = "out_of_order"
OUT_OF_RANGE = "out_of_range"
INVALID = "invalid"
INACTIVE = "inactive"  # the executor is not in its active lifecycle state
# No action value of this layout (metres, Rotate6D entries, gripper metres) comes near this:
# larger values are garbage, and squaring them would overflow the rotation checks.
MAX_ACTION_MAGNITUDE = 100.0
# Smallest sine of the angle between the two Rotate6D columns (and smallest column norm).
MIN_ROT6D_SINE = 1e-3


class ChunkRejected(ValueError):
    def __init__(self, reason: str, detail: str):
        detail = bounded(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Chunk:
    stamp: float  # capture time of the observation, s
    dt: float  # period between steps, s
    actions: np.ndarray  # (H, D) float64, in the executor's layout
    sequence: int = 0
    checkpoint_id: str = ""

    def due_times(self, latency_compensation: float) -> np.ndarray:
        """(H,) time at which each step is due."""
        return step_due_times(self.stamp, self.dt, len(self.actions), latency_compensation)

    def future_steps(self, now: float, latency_compensation: float) -> tuple[np.ndarray, np.ndarray]:
        """Times (K,) and actions (K, D) of the steps not yet past at ``now``; a step whose
        time has passed is never returned, so it is never executed."""
        times = self.due_times(latency_compensation)
        keep = times > now
        return times[keep], self.actions[keep]


def validate_chunk(
    *,
    stamp: float,
    dt: float,
    horizon: int,
    action_names: list[str] | tuple[str, ...],
    actions,
    expected_names: tuple[str, ...],
    now: float,
    latency_compensation: float = 0.0,
    future_tolerance: float = 0.05,
    max_dt: float = 1.0,
    sequence: int = 0,
    checkpoint_id: str = "",
    max_horizon: int = 1000,
    max_text: int = 256,
) -> Chunk:
    """The chunk, validated; raises ``ChunkRejected`` (nothing of it may be executed)."""
    if len(checkpoint_id) > max_text:
        raise ChunkRejected(TOO_LONG, f"checkpoint id of {len(checkpoint_id)} characters (at most {max_text})")
    if len(action_names) != len(expected_names):
        raise ChunkRejected(UNKNOWN_LAYOUT, f"{len(action_names)} action names, the layout has {len(expected_names)}")
    if tuple(action_names) != tuple(expected_names):
        unknown = sorted(set(action_names) - set(expected_names))
        missing = sorted(set(expected_names) - set(action_names))
        detail = f"unknown {unknown}, missing {missing}" if unknown or missing else "dimensions in another order"
        raise ChunkRejected(UNKNOWN_LAYOUT, detail)
    dim = len(expected_names)
    if horizon > max_horizon:
        raise ChunkRejected(TOO_LONG, f"{horizon} steps (at most {max_horizon})")
    values = np.asarray(actions, dtype=np.float64).ravel()
    if horizon <= 0 or values.size != horizon * dim:
        raise ChunkRejected(WRONG_SIZE, f"{values.size} values for horizon {horizon} x {dim} dimensions")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))
        raise ChunkRejected(
            NAN_OR_INF, f"{bad.size} values, first at step {bad[0] // dim} ({expected_names[bad[0] % dim]})"
        )
    if np.abs(values).max() > MAX_ACTION_MAGNITUDE:
        worst = int(np.argmax(np.abs(values)))
        raise ChunkRejected(
            OUT_OF_RANGE,
            f"{values[worst]:.3g} at step {worst // dim} ({expected_names[worst % dim]}); "
            f"|values| <= {MAX_ACTION_MAGNITUDE:g}",
        )
    _check_rotations(values.reshape(horizon, dim), tuple(expected_names))
    if not (np.isfinite(dt) and 0.0 < dt <= max_dt):
        raise ChunkRejected(BAD_PERIOD, f"dt {dt} s outside (0, {max_dt}]")
    if not np.isfinite(stamp) or stamp > now + future_tolerance:
        raise ChunkRejected(FUTURE_STAMP, f"stamp {stamp:.3f} is {stamp - now:.3f} s ahead of the clock")
    chunk = Chunk(stamp, dt, values.reshape(horizon, dim), sequence, checkpoint_id)
    last_due = chunk.due_times(latency_compensation)[-1]
    if last_due <= now:
        raise ChunkRejected(STALE, f"its last step was due {now - last_due:.3f} s ago")
    return chunk


def _check_rotations(actions: np.ndarray, names: tuple[str, ...]) -> None:
    """Raise DEGENERATE_ROTATION if any step's Rotate6D of any arm is no rotation."""
    index = {n: i for i, n in enumerate(names)}
    for arm in dict.fromkeys(n.split("/")[0] for n in names if n.endswith("/" + ROT6D_FIELDS[0])):
        columns = actions[:, [index[f"{arm}/{f}"] for f in ROT6D_FIELDS]]  # (H, 6)
        first, second = columns[:, :3], columns[:, 3:]
        norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
        sine = np.linalg.norm(np.cross(first, second), axis=1) / np.maximum(norms, 1e-300)
        bad = np.flatnonzero((norms < MIN_ROT6D_SINE**2) | (sine < MIN_ROT6D_SINE))
        if bad.size:
            raise ChunkRejected(DEGENERATE_ROTATION, f"{arm} at {bad.size} steps, first {bad[0]}")
