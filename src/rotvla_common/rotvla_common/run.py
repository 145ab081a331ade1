"""Run a node given as ``module:Class``, importing its module only once the node's signal
handling is in place (``rotvla_common.ros.run_node``): a Ctrl-C during a heavy import (torch)
then ends the process with exit 0 and no traceback.

    python -m rotvla_common.run rotvla_ros.nodes.policy_node:PolicyNode --ros-args ...
"""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or ":" not in argv[1]:
        sys.exit("usage: python -m rotvla_common.run module:Class [--ros-args ...]")
    from .ros import run_node  # rclpy, not torch: fast

    run_node(argv[1], [argv[0], *argv[2:]])


if __name__ == "__main__":
    main()
