"""ROS 2 parameter files read without rclpy, merged per parameter as rcl merges them.

rclpy's ``parameter_dict_from_yaml_file`` updates nested dictionaries wholesale: a node's
``left: {workspace_max: ...}`` replaced the ``/**`` section's ``left: {base_xyz: ...}`` and
the base pose silently fell back to a code default. Here every section is flattened to
parameter names (``left.base_xyz``) first, so each parameter is set by the last file and
section that names it: ``/**``, then the node's own section, file after file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """{"left": {"base_xyz": v}} -> {"left.base_xyz": v}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_parameter_files(files: list[Path], node_name: str) -> dict[str, Any]:
    """A node's parameters from ROS 2 parameter files (``/**`` and its own section)."""
    values: dict[str, Any] = {}
    for path in files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a ROS 2 parameter file")
        for section in ("/**", node_name, f"/{node_name}"):
            body = data.get(section)
            if body is None:
                continue
            if not isinstance(body, dict) or not isinstance(body.get("ros__parameters", {}), dict):
                raise ValueError(f"{path}: section {section} has no ros__parameters mapping")
            values.update(flatten(body.get("ros__parameters") or {}))
    return values
