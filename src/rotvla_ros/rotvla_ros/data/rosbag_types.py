"""rosbag2 type registration for the project's messages, without ROS.

Bags are read and written with the ``rosbags`` library, which needs every message type's
definition. The standard ROS 2 types come with its typestores; ``rotvla_msgs`` types are
registered from the package's own ``.msg`` text, so a cluster without ROS reads our bags
with exactly the definitions the robot recorded them with.
"""

from __future__ import annotations

from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

MSGS_PACKAGE = "rotvla_msgs"
# Kilted is the distro of the PyPI wheels; Humble/Jazzy define the standard messages this
# project uses identically.
DEFAULT_STORE = Stores.ROS2_KILTED


def msgs_package_dir() -> Path:
    """Directory holding ``msg/*.msg`` of rotvla_msgs: the installed share directory where
    an ament index is available, else the source tree beside this package."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            return Path(get_package_share_directory(MSGS_PACKAGE))
        except (PackageNotFoundError, LookupError, KeyError, ValueError):
            pass
    except ImportError:
        pass
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "src" / MSGS_PACKAGE
        if (candidate / "msg").is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the {MSGS_PACKAGE} message definitions: source the workspace "
        f"(install/setup.bash) or run from a checkout of the repository"
    )


def rotvla_msg_definitions() -> dict[str, str]:
    """``{"rotvla_msgs/msg/ActionChunk": <.msg text>, ...}``."""
    msg_dir = msgs_package_dir() / "msg"
    return {f"{MSGS_PACKAGE}/msg/{p.stem}": p.read_text() for p in sorted(msg_dir.glob("*.msg"))}


def make_typestore(store: Stores = DEFAULT_STORE) -> Typestore:
    """A typestore with the standard ROS 2 types of ``store`` and every rotvla_msgs type."""
    typestore = get_typestore(store)
    types = {}
    for name, text in rotvla_msg_definitions().items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore
