"""Per-dimension normalisation statistics of the robot actions (and of the robot state, for a
checkpoint that takes it), stored beside a checkpoint (``normalization.json``: one entry per
feature, ``action`` and ``state``) and computed from training data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotvla_common.text import read_json

# The smallest scale a dimension is normalised by (1 cm, 0.01 of a Rotate6D entry, 0.01 rad):
# a dimension that (nearly) never varied in the data (the idle arm of a single-arm task, a
# rotation entry the demonstrations kept at 0) must not turn the sub-millimetre differences
# between the recorded robot and a live one into inputs many standard deviations away.
MIN_STD = 1e-2
# Beyond these the statistics describe no robot (metres, radians, even millimetres or degrees
# stay far below): a checkpoint carrying them would serve garbage.
MAX_MAGNITUDE, MAX_STD = 1e4, 1e4


@dataclass
class ActionNormalizer:
    names: tuple[str, ...]
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    minimum: np.ndarray  # (D,)
    maximum: np.ndarray  # (D,)

    def __post_init__(self):
        arrays = [np.asarray(a, dtype=np.float64) for a in (self.mean, self.std, self.minimum, self.maximum)]
        if any(a.shape != (len(self.names),) for a in arrays):
            raise ValueError(f"normalisation statistics must have one value per action dimension ({len(self.names)})")
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("normalisation statistics contain NaN or inf")
        if (arrays[1] <= 0).any():
            raise ValueError("normalisation std must be positive")
        if (arrays[1] > MAX_STD).any() or any(
            (np.abs(a) > MAX_MAGNITUDE).any() for a in (arrays[0], arrays[2], arrays[3])
        ):
            raise ValueError(
                f"normalisation statistics beyond any robot's range (std <= {MAX_STD:g}, |values| <= {MAX_MAGNITUDE:g})"
            )
        if (arrays[2] > arrays[3]).any():
            raise ValueError("normalisation min exceeds max")
        self.mean, self.std, self.minimum, self.maximum = arrays
        self.names = tuple(self.names)

    @classmethod
    def identity(cls, names) -> ActionNormalizer:
        d = len(names)
        return cls(tuple(names), np.zeros(d), np.ones(d), np.full(d, -1.0), np.full(d, 1.0))

    @classmethod
    def from_data(cls, names, actions: np.ndarray) -> ActionNormalizer:
        """actions (N, D) -> statistics."""
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, len(names))
        return cls(tuple(names), actions.mean(0), np.maximum(actions.std(0), MIN_STD), actions.min(0), actions.max(0))

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        return ((actions - self.mean) / self.std).astype(np.float32)

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        return (actions * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ActionNormalizer:
        return cls(tuple(data["names"]), data["mean"], data["std"], data["min"], data["max"])


def save_statistics(path: Path, action: ActionNormalizer, state: ActionNormalizer | None = None) -> None:
    data = {"action": action.to_dict()}
    if state is not None:
        data["state"] = state.to_dict()
    Path(path).write_text(json.dumps(data, indent=2))


def load_statistics(path: Path) -> tuple[ActionNormalizer, ActionNormalizer | None]:
    """(action statistics, state statistics or None); raises ValueError, KeyError, TypeError."""
    data = read_json(path)
    state = ActionNormalizer.from_dict(data["state"]) if "state" in data else None
    return ActionNormalizer.from_dict(data["action"]), state
