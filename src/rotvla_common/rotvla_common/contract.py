"""The train/deploy contract: what a chunk's steps mean in time, which pixels the model sees,
and what the robot state is. Conversion, the dataset reader, training, the policy, the
simulation and the executor all take these from here; a checkpoint records its side of it
(``RotVLAConfig.dt``, ``image_size``, ``camera_names``, ``action_names``, ``use_state``) and a
deployment that disagrees refuses it at load (``contract_mismatches``).

Time
    A dataset is resampled at ``fps`` frames per second (``info.json``); a checkpoint trained
    on it has ``dt = 1 / fps`` and every chunk it makes carries that ``dt``.

Alignment (which instant ``action[i]`` belongs to)
    A dataset's ``action`` at frame ``k`` is the robot state at frame ``k + 1``: the pose the
    action at ``k`` leads to (LeRobot's ``action[t] -> state[t + 1]``). A chunk computed from
    an observation captured at ``stamp`` therefore has step ``i`` (0-based) due at
    ``stamp + (i + 1) * dt`` (+ the executor's latency compensation): ``step_due_times``.

Pixels
    Every camera image, in training and live, becomes model input through ``prepare_image``:
    the central square of the frame, resized to ``size`` x ``size`` (area averaging by the
    integer part of the factor, then bilinear). A 4:3 stream loses its sides the same way in
    both.

State
    The robot state (``observation.state``, and the policy's optional state input) is
    ``eef_state`` per arm, left first: the EEF pose in the arm's base frame as xyz + Rotate6D
    and the gripper opening, the same 10-number layout as one arm's action.

Who drives
    ``EXECUTOR_STATES``: whether the executor may move the arms at all (its lifecycle state).
    ``CONTROL_SOURCES``: the policy (action chunks), teleop (an operator: leader arms, the
    simulated expert) or homing (to the ready pose). The executor reports it in its status; a dataset keeps it per frame
    (``action_source``, an index into ``CONTROL_SOURCES``) with ``intervention``: the frames an
    operator drove in an episode the policy also drove (a takeover's correction).

numpy only: the executor, which must not depend on torch, uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

POLICY, TELEOP, HOME = "policy", "teleop", "home"
CONTROL_SOURCES = (POLICY, TELEOP, HOME)  # appended only: datasets index into it
# The executor's lifecycle states that a start can end in (launch's executor_state, the node's
# initial_state): unconfigured, inactive (the arms read, nothing sent), active.
UNCONFIGURED, INACTIVE, ACTIVE = "unconfigured", "inactive", "active"
EXECUTOR_STATES = (UNCONFIGURED, INACTIVE, ACTIVE)

# The robot's step period, s: one chunk step, one observation (the camera ingestion's rate, the
# simulated cameras' frame period), one frame of a converted demonstration. The nodes' default;
# config/robot.yaml's step_period sets it for every node at once.
STEP_PERIOD = 0.1
DEFAULT_FPS = round(1 / STEP_PERIOD)  # conversion's default


def step_due_times(stamp: float, dt: float, horizon: int, latency_compensation: float = 0.0) -> np.ndarray:
    """(H,) time at which each step of a chunk is due (see the module docstring)."""
    return stamp + latency_compensation + dt * np.arange(1, horizon + 1)


def next_state_actions(state: np.ndarray) -> np.ndarray:
    """A recorded episode's states (T, D) -> its actions (T, D): the next frame's state, the
    last frame holding its own."""
    return np.concatenate([state[1:], state[-1:]], axis=0)


# -- pixels ---------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _bilinear_plan(in_h: int, in_w: int, size: int):
    """Source indices and weights of a centre-crop-to-square + bilinear resize (cached per
    input shape: cameras keep theirs)."""
    side = min(in_h, in_w)
    top, left = (in_h - side) // 2, (in_w - side) // 2
    # Pixel centres of the output mapped into the crop (align_corners=False convention).
    coords = (np.arange(size) + 0.5) * side / size - 0.5
    coords = np.clip(coords, 0, side - 1)
    low = np.floor(coords).astype(np.intp)
    high = np.minimum(low + 1, side - 1)
    frac = (coords - low).astype(np.float32)
    return top + low, top + high, left + low, left + high, frac


def prepare_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: the central square, resized bilinearly
    (area averaging first when shrinking by 2x or more, against aliasing)."""
    side = min(rgb.shape[:2])
    factor = side // size
    if factor >= 2:  # box-filter by an integer factor, then bilinear for the remainder
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        crop = rgb[top : top + side - side % factor, left : left + side - side % factor]
        small = side // factor
        rgb = crop.reshape(small, factor, small, factor, 3).mean(axis=(1, 3), dtype=np.float32)
    if rgb.shape[:2] == (size, size):
        return np.round(rgb).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    rows0, rows1, cols0, cols1, frac = _bilinear_plan(rgb.shape[0], rgb.shape[1], size)
    # Rows first, then columns: two 1-D interpolations.
    fy = frac[:, None, None]
    rows = rgb[rows0].astype(np.float32) * (1 - fy) + rgb[rows1].astype(np.float32) * fy  # (size, W, 3)
    fx = frac[None, :, None]
    out = rows[:, cols0] * (1 - fx) + rows[:, cols1] * fx  # (size, size, 3)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# -- the robot state ------------------------------------------------------------------------


def quaternion_to_matrix(xyzw) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation matrix (normalised first)."""
    x, y, z, w = np.asarray(xyzw, dtype=np.float64) / np.linalg.norm(xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def eef_state(position, rotation: np.ndarray, gripper: float) -> np.ndarray:
    """One arm's state (10,): xyz, Rotate6D (first two columns of ``rotation``), gripper."""
    rotation = np.asarray(rotation, dtype=np.float64)
    return np.r_[np.asarray(position, dtype=np.float64), rotation[:, 0], rotation[:, 1], float(gripper)]


# -- checking a checkpoint against a deployment -----------------------------------------------


@dataclass(frozen=True)
class Contract:
    """One side of the contract: what a checkpoint was trained for, or what a deployment
    provides. ``dt`` 0 and an empty ``camera_names`` on a deployment mean "any"."""

    dt: float
    image_size: int
    camera_names: tuple[str, ...]
    action_names: tuple[str, ...]


def contract_mismatches(checkpoint: Contract, deployment: Contract) -> list[str]:
    """Why a checkpoint cannot serve a deployment (empty: it can)."""
    reasons = []
    if deployment.dt > 0 and not np.isclose(checkpoint.dt, deployment.dt, rtol=1e-6, atol=1e-9):
        reasons.append(
            f"step period {checkpoint.dt:g} s ({1 / checkpoint.dt:g} fps) where the robot runs "
            f"{deployment.dt:g} s ({1 / deployment.dt:g} fps)"
        )
    if checkpoint.image_size != deployment.image_size:
        reasons.append(
            f"images of {checkpoint.image_size} px where the camera ingestion makes {deployment.image_size} px"
        )
    missing = [c for c in checkpoint.camera_names if c not in deployment.camera_names]
    if deployment.camera_names and missing:
        reasons.append(f"cameras {missing} that the robot does not have ({list(deployment.camera_names)})")
    if tuple(checkpoint.action_names) != tuple(deployment.action_names):
        reasons.append(
            f"action layout {list(checkpoint.action_names)} where the robot's is {list(deployment.action_names)}"
        )
    return reasons
