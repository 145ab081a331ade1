"""rotvla_ros.policy: a checkpoint as a callable (imports no rclpy)."""

from .checkpoint import CheckpointError
from .normalization import ActionNormalizer
from .policy import NonFiniteOutputError, ObservationError, PolicyOutput, RotVLAPolicy
from .registry import Policy, load_policy, policy_types, read_contract, register_policy

__all__ = [
    "ActionNormalizer",
    "CheckpointError",
    "NonFiniteOutputError",
    "ObservationError",
    "Policy",
    "PolicyOutput",
    "RotVLAPolicy",
    "load_policy",
    "policy_types",
    "read_contract",
    "register_policy",
]
