"""Policies by name, as LeRobot finds a policy's class from its config: a checkpoint's
``config.json`` says its ``type`` (absent: ``rotvla``, what every checkpoint before the field
was), and the class registered under that name loads it. The policy node, the evaluation and
``rotvla_check`` load through ``load_policy``; none names a class.

A new architecture (a baseline to compare against, a distilled policy) is one class that
satisfies ``Policy`` and one registration: ``@register_policy("mine")`` in a module this
package imports, or an entry point of its own package,
``entry_points={"rotvla_ros.policies": ["mine = my_pkg.policy:MyPolicy"]}``. ROS-free.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from rotvla_common.contract import Contract

from .checkpoint import CONFIG_FILE, CheckpointError, read_json

DEFAULT_TYPE = "rotvla"
ENTRY_POINTS = "rotvla_ros.policies"


@runtime_checkable
class Policy(Protocol):
    """What serving and evaluation need of a loaded checkpoint."""

    checkpoint_id: str  # names the exact weights (the chunks carry it)
    uses_state: bool  # whether ``predict`` takes the robot state (else it is not computed)

    @property
    def contract(self) -> Contract:
        """What the checkpoint was trained for: step period, image size, cameras, action layout."""

    @classmethod
    def read_contract(cls, path: str | Path) -> Contract:
        """The contract of the checkpoint at ``path`` from its configuration alone (no weights
        loaded: what rotvla_check compares with the deployment); ``CheckpointError``."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        expected_action_names: tuple[str, ...] | None = None,
        inference_mode: str | None = None,
    ) -> Policy:
        """Load a checkpoint directory; ``CheckpointError`` with the reason."""

    def prepare(self) -> float:
        """Build any fast path before serving (off the serving thread); seconds spent."""

    def fast_path(self) -> str:
        """What ``prepare`` built, for a log line ("" for nothing)."""

    def warmup_pass(self, index: int = 0) -> None:
        """One prediction on a synthetic observation (kernels, caches, allocator)."""

    def predict(self, observation: dict, seed: int | None = None):
        """One chunk (a ``PolicyOutput``) from ``{"images": {camera: (H, W, 3) uint8},
        "state": (S,), "instruction": str}``; ``NonFiniteOutputError`` rather than NaN."""


_REGISTERED: dict[str, type] = {}


def register_policy(name: str):
    """Class decorator: the policy that loads checkpoints whose config says ``type: name``."""

    def register(cls: type) -> type:
        if name in _REGISTERED and _REGISTERED[name] is not cls:
            raise ValueError(f"policy type {name!r} is already {_REGISTERED[name].__name__}")
        _REGISTERED[name] = cls
        return cls

    return register


def policy_types() -> dict[str, type]:
    """Every registered policy: this package's and other packages' entry points."""
    from . import policy  # noqa: F401 - registers the built-in RotVLA

    for entry in entry_points(group=ENTRY_POINTS):
        if entry.name not in _REGISTERED:
            register_policy(entry.name)(entry.load())
    return dict(_REGISTERED)


def checkpoint_type(path: str | Path) -> str:
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return DEFAULT_TYPE  # its loader says what is missing
    data = read_json(config)
    kind = data.get("type", DEFAULT_TYPE) if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: type must be a policy's name, not {kind!r}")
    return kind


def policy_class(path: str | Path) -> type:
    """The class that loads the checkpoint at ``path``; ``CheckpointError`` for an unknown type."""
    kind, known = checkpoint_type(path), policy_types()
    if kind not in known:
        raise CheckpointError(
            f"{path}: a {kind!r} checkpoint, and no policy of that type is installed: {sorted(known)}"
        )
    return known[kind]


def read_contract(path: str | Path) -> Contract:
    """The contract of the checkpoint at ``path``, read by the class its config names."""
    return policy_class(path).read_contract(path)


def load_policy(path: str | Path, **kwargs) -> Policy:
    """The checkpoint at ``path``, loaded by the class its config names (``from_pretrained``'s
    keyword arguments)."""
    return policy_class(path).from_pretrained(path, **kwargs)
