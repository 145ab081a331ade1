"""rotvla_ros.policy: a checkpoint as a callable (imports no rclpy)."""

from .checkpoint import CheckpointError
from .normalization import ActionNormalizer
from .policy import NonFiniteOutputError, ObservationError, PolicyOutput, RotVLAPolicy

__all__ = [
    "ActionNormalizer",
    "CheckpointError",
    "NonFiniteOutputError",
    "ObservationError",
    "PolicyOutput",
    "RotVLAPolicy",
]
