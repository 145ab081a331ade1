"""Per-dimension normalisation statistics of the robot actions, stored beside a checkpoint
(``normalization.json``) and computed from training data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A dimension that never varied in the data (a fixed gripper, say) keeps unit scale.
MIN_STD = 1e-4


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
        self.mean, self.std, self.minimum, self.maximum = arrays
        self.names = tuple(self.names)

    @classmethod
    def identity(cls, names) -> "ActionNormalizer":
        d = len(names)
        return cls(tuple(names), np.zeros(d), np.ones(d), np.full(d, -1.0), np.full(d, 1.0))

    @classmethod
    def from_data(cls, names, actions: np.ndarray) -> "ActionNormalizer":
        """actions (N, D) -> statistics."""
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, len(names))
        return cls(
            tuple(names), actions.mean(0), np.maximum(actions.std(0), MIN_STD), actions.min(0), actions.max(0)
        )

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        return ((actions - self.mean) / self.std).astype(np.float32)

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        return (actions * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "action": {
                "names": list(self.names),
                "mean": self.mean.tolist(),
                "std": self.std.tolist(),
                "min": self.minimum.tolist(),
                "max": self.maximum.tolist(),
            }
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ActionNormalizer":
        a = data["action"]
        return cls(tuple(a["names"]), a["mean"], a["std"], a["min"], a["max"])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "ActionNormalizer":
        return cls.from_dict(json.loads(Path(path).read_text()))
