"""The workspace itself: layout, installed share files, the ROS-free promise, set-up."""

import ast
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

ROS_FREE = ["model", "policy", "data", "train"]


def test_layout_promised_to_users_exists():
    for path in [
        "src/rotvla_ros/package.xml",
        "src/rotvla_msgs/package.xml",
        "src/arx_r5_driver/package.xml",
        "src/rotvla_common/package.xml",
        "launch",
        "config",
        "models/README.md",
        "tests",
        "colcon.meta",
        "README.md",
        ".ci/run",
    ]:
        assert (REPO_ROOT / path).exists(), path


@pytest.mark.parametrize("subpackage", ROS_FREE)
def test_model_data_and_training_code_import_no_rclpy(subpackage):
    """People train on clusters without ROS: these folders must not import rclpy (or any
    ROS client library), directly or by name."""
    folder = REPO_ROOT / "src/rotvla_ros/rotvla_ros" / subpackage
    offenders = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("rclpy", "rosidl_runtime_py", "rotvla_msgs") or n.startswith("rotvla_common.ros")
            ]
    assert not offenders


def test_launch_and_config_files_are_installed_into_the_package_share():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("rotvla_ros"))
    for folder in ("launch", "config"):
        source = REPO_ROOT / folder
        expected = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.suffix in (".py", ".yaml"))
        installed = sorted(
            str(p.relative_to(share / folder)) for p in (share / folder).rglob("*") if p.is_file() or p.is_symlink()
        )
        assert installed == expected, folder
    assert (share / "launch" / "bringup.launch.py").exists() and (
        share / "config" / "train" / "sim" / "stage3.yaml"
    ).exists()


@pytest.mark.slow
def test_setup_from_a_fresh_clone_then_a_quick_second_run(tmp_path):
    """The README's set-up on a temporary clone: cold, then warm (must be seconds)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "AMENT", "COLCON", "ROS_DISTRO"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, check=True)
    cold = time.monotonic() - started
    started = time.monotonic()
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, check=True)
    warm = time.monotonic() - started
    print(f"set-up on a fresh clone: cold {cold:.1f} s, warm {warm:.1f} s")
    assert warm < 15
    probe = subprocess.run(
        [
            "bash",
            "-c",
            "source scripts/env.sh && "
            "python -c 'import rclpy, rotvla_msgs.msg, rotvla_ros, arx_r5_driver, rotvla_common.ros'",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    shutil.rmtree(clone)


def test_stamp_conversions_carry_rounding_into_the_seconds():
    pytest.importorskip("rclpy")
    from rotvla_ros.nodes.common import to_duration, to_seconds, to_time

    assert (to_time(1.9999999999).sec, to_time(1.9999999999).nanosec) == (2, 0)
    assert (to_time(100.25).sec, to_time(100.25).nanosec) == (100, 250_000_000)
    assert to_seconds(to_duration(0.05)) == pytest.approx(0.05)


def test_topic_and_service_names_are_written_only_in_rotvla_common_topics():
    """A name copied as a string literal drifts when the original is renamed: the packages'
    code takes every topic and service name from rotvla_common.topics."""
    from rotvla_common import topics

    names = {value for key, value in vars(topics).items() if key.isupper() and isinstance(value, str)}
    names |= {topics.absolute(name) for name in names}
    copies = []
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        if path.name == "topics.py" or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (node.value in names or any(node.value.startswith(n + "/") for n in names))
            ):
                copies.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert not copies, "\n".join(copies)


def test_camera_names_and_the_rotate6d_layout_are_written_only_in_the_action_space():
    from rotvla_common.action_space import CAMERA_NAMES, ROT6D_FIELDS

    copies = []
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        if path.name == "action_space.py" or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) for e in node.elts):
                values = tuple(e.value for e in node.elts)
                if values in (tuple(CAMERA_NAMES), tuple(ROT6D_FIELDS)):
                    copies.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {values}")
    assert not copies, "\n".join(copies)


@pytest.mark.parametrize("script", ["scripts/run.sh", "scripts/setup.sh", "scripts/env.sh", ".ci/run"])
def test_the_shell_scripts_parse(script):
    """make run broke once on a quote inside ${...:-...}: nothing but running it showed it."""
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
