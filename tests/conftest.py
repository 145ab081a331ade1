"""Shared fixtures. ROS tests run real rclpy nodes over real DDS, isolated on localhost and
on a DDS domain of their own so that parallel runs and other graphs do not cross-talk."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# Before anything imports rclpy: one domain per test session, discovery on localhost only
# (ROS_AUTOMATIC_DISCOVERY_RANGE for Iron and later, ROS_LOCALHOST_ONLY for Humble).
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(10, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def rclpy_context():
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


def spin_until(executor, predicate, timeout: float, step: float = 0.02) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step)
    return predicate()


class Peer:
    """A Python script (or, with a first argument that is an executable, any command) in its
    own process: a second DDS participant."""

    def __init__(self, script, *args: str):
        command = [str(script), *args] if str(script) == sys.executable else [sys.executable, str(script), *args]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )
        self.lines: list[str] = []
        # Drain the output continuously: a full pipe would block the peer.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, marker: str = "ready", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(marker in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"peer exited with {self.proc.returncode}: {''.join(self.lines[-20:])}")
            time.sleep(0.02)
        raise TimeoutError(f"peer not ready within {timeout} s")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def peer_factory():
    peers: list[Peer] = []

    def start(script, *args: str) -> Peer:
        peer = Peer(script, *args)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


def executor_process(peer_factory, *params: str) -> Peer:
    """The executor node in a process of its own, as launch runs it: config/robot.yaml, then
    each ``name:=value`` node-qualified (robot.yaml's node-specific values outrank a plain -p)."""
    return peer_factory(
        sys.executable,
        "-m",
        "arx_r5_driver.executor_node",
        "--ros-args",
        "--params-file",
        str(REPO_ROOT / "config" / "robot.yaml"),
        *[arg for param in params for arg in ("-p", f"arx_r5_executor:{param}")],
    )


class RosHarness:
    """Nodes under test spinning in a MultiThreadedExecutor on a background thread, as they
    run in production; the test thread publishes, calls and polls."""

    def __init__(self):
        import threading

        from rclpy.executors import MultiThreadedExecutor

        self.executor = MultiThreadedExecutor(num_threads=4)
        self.nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, RuntimeError):
            self.executor.spin()

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        for node in reversed(self.nodes):
            node.destroy_node()
        self._thread.join(timeout=5.0)


def wait_for(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def ros(rclpy_context):
    harness = RosHarness()
    yield harness
    harness.close()
