"""Shared fixtures. ROS tests run real rclpy nodes over real DDS, isolated on localhost and
on a DDS domain of their own so that parallel runs and other graphs do not cross-talk."""

from __future__ import annotations

import os
import random
import subprocess
import sys
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
    """A Python script in its own process (a second DDS participant)."""

    def __init__(self, script: Path, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )

    def wait_ready(self, marker: str = "ready", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if marker in line:
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"peer exited with {self.proc.returncode}")
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

    def start(script: Path, *args: str) -> Peer:
        peer = Peer(script, *args)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
