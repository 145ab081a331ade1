"""Console scripts of nodes whose module imports torch: the module is imported only after the
node's signal handling is in place (``rotvla_common.ros.run_node`` with ``"module:Class"``),
so a stop during the seconds of that import exits 0 without a traceback. Keep this module
light."""

from __future__ import annotations

from rotvla_common.ros import run_node


def policy_node(args=None) -> None:
    run_node("rotvla_ros.nodes.policy_node:PolicyNode", args)
