"""ROS 2 parameter files read without rclpy, resolved for a node as rcl resolves them.

rcl parses every ``--params-file`` into one table of sections keyed by node-name patterns
(``/**``, ``/**/policy``, ``/cell1/policy``), in the order a key first appears; a later
file's value for the same key and parameter replaces the earlier one. A node then takes,
section by section in that order, every section whose pattern matches its fully qualified
name (``/**`` any namespace path, ``/*`` one name), a later section overriding an earlier
one. So a node's own section beats ``/**`` whatever the file order, and a section keyed by
the bare node name (``policy:``) matches only the root namespace.

Our files therefore key node sections ``/**/<node>`` (the node in any namespace), and the
bringup's overrides are written under that same key in a file passed last
(``write_overrides``), where they replace the files' values. A ``-p`` argument or launch_ros's
dictionary parameters would land in ``/**`` and lose to the node's section.

Nested mappings are flattened to parameter names (``left.base_xyz``) first: rclpy's
``parameter_dict_from_yaml_file`` replaces nested dictionaries wholesale.
"""

from __future__ import annotations

import re
import tempfile
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


def node_section(node_name: str) -> str:
    """The key of a node's section that matches it in any namespace."""
    return f"/**/{node_name}"


def _key_matches(key: str, node_fqn: str) -> bool:
    """rcl's node-name match: ``/**`` is any namespace path (or none), ``/*`` one name."""
    key = key if key.startswith("/") else "/" + key
    pattern = re.escape(key).replace(r"/\*\*", r"(/\w+)*").replace(r"/\*", r"(/\w+)")
    return re.fullmatch(pattern, node_fqn) is not None


def _sections(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Every section of the files, flattened, merged per key and parameter (later file wins),
    in the order each key first appears."""
    sections: dict[str, dict[str, Any]] = {}
    for path in files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a ROS 2 parameter file")
        for key, body in data.items():
            if not isinstance(body, dict) or not isinstance(body.get("ros__parameters", {}), dict):
                raise ValueError(f"{path}: section {key} has no ros__parameters mapping")
            sections.setdefault(str(key), {}).update(flatten(body.get("ros__parameters") or {}))
    return sections


def read_parameter_files(files: list[Path], node_name: str, namespace: str = "") -> dict[str, Any]:
    """A node's parameters from ROS 2 parameter files, as rcl gives them to the node
    ``<namespace>/<node_name>``. An empty ``node_name``: the ``/**`` sections alone."""
    values: dict[str, Any] = {}
    for key, section in _sections(files).items():
        if key == "/**" or (node_name and _key_matches(key, f"{namespace}/{node_name}")):
            values.update(section)
    return values


def write_overrides(node_name: str, values: dict[str, Any], directory: Path | None = None) -> Path:
    """A parameter file holding ``values`` under the node's own section: passed after the
    config files, its values win over theirs in any namespace (see the module docstring)."""
    text = yaml.safe_dump({node_section(node_name): {"ros__parameters": values}}, sort_keys=True)
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"rotvla_{node_name}_", suffix=".yaml", dir=directory, delete=False
    ) as file:
        file.write(text)
    return Path(file.name)
