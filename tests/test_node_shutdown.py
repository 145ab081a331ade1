"""Nodes stop cleanly and promptly whichever way the signal comes: SIGINT (a terminal's Ctrl-C)
or SIGTERM (what launch sends), to the node alone or to its whole process group (a terminal
signals the group; launch signals each node, then the group gets the terminal's too), once or
several times in a row: exit code 0, no traceback, no process left behind. A node that cannot
start says why in one line and exits non-zero; in the bringup, a required node's end stops
the whole system."""

import os
import signal
import subprocess
import sys
import time

import pytest

from arx_r5_driver.backends.sdk import SIM_ARMS_ARGUMENTS
from conftest import REPO_ROOT

ROBOT = str(REPO_ROOT / "config" / "robot.yaml")
SIM = str(REPO_ROOT / "config" / "sim.yaml")
TINY = str(REPO_ROOT / "models" / "tiny-random")
POLICY = "rotvla_ros.nodes.policy_node:PolicyNode"

# Each node as launch would start it, and a line that says it is up.
NODES = {
    "policy": (
        # As its console script and the composed runner start it: torch is imported after the
        # node's signal handling is in place.
        ["-m", "rotvla_common.run", POLICY, "--ros-args", "-p", f"checkpoint:={TINY}", "-p", "device:=cpu"],
        "serving",
    ),
    "camera_ingestion": (["-m", "rotvla_ros.nodes.camera_ingestion"], None),
    "executor": (
        [
            "-m",
            "arx_r5_driver.executor_node",
            "--ros-args",
            "--params-file",
            ROBOT,
            "-p",
            "arx_r5_executor:backend:=sim",
        ],
        "at 200 Hz",
    ),
    "sim": (
        ["-m", "rotvla_ros.nodes.sim_node", "--ros-args", "--params-file", ROBOT, "--params-file", SIM],
        "task block_to_plate",
    ),
    "recorder": (["-m", "rotvla_ros.nodes.episode_recorder"], "recording"),
}


class Process:
    def __init__(self, args: list[str]):
        # A session (and process group) of its own: the group signal reaches it and its children only.
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []

    def wait_for(self, marker: str | None, timeout: float = 90.0) -> None:
        if marker is None:
            time.sleep(3)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if marker in line:
                return
            assert line or self.proc.poll() is None, "exited early:\n" + "".join(self.lines[-30:])
        pytest.fail(f"no {marker!r} within {timeout} s:\n" + "".join(self.lines[-30:]))

    def signal(self, sig, group: bool) -> None:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
            time.sleep(1)
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail("did not exit:\n" + self.proc.stdout.read()[-6000:])
        return code, "".join(self.lines) + self.proc.stdout.read()

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not running
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("group", [False, True], ids=["to the node", "to its group"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("node", sorted(NODES))
def test_a_node_stops_cleanly_on_signals(node, sig, group):
    args, marker = NODES[node]
    process = Process(args)
    try:
        process.wait_for(marker)
        started = time.monotonic()
        for _ in range(3):  # a repeated signal (launch's, then the terminal's) must not break the stop
            process.signal(sig, group)
            time.sleep(0.05)
        code, output = process.finish()
        assert code == 0, output[-4000:]
        assert "Traceback" not in output and "terminate called" not in output, output[-4000:]
        assert time.monotonic() - started < 15
        time.sleep(0.5)
        assert not process.group_alive(), "a process of the node's group is still running"
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_policy_node_stopped_while_it_imports_torch_exits_cleanly(sig):
    """launch's Ctrl-C often lands in the seconds the policy node spends importing torch: that
    gave a KeyboardInterrupt traceback and a non-zero code."""
    process = Process(["-m", "rotvla_common.run", POLICY, "--ros-args", "-p", f"checkpoint:={TINY}"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.proc.poll() is None:
            with open(f"/proc/{process.proc.pid}/maps") as maps:
                if "libtorch" in maps.read():  # torch's import has begun
                    break
            time.sleep(0.005)
        process.signal(sig, group=True)
        code, output = process.finish()
        assert "serving" not in output, "the signal came after the import: nothing was tested"
        assert code == 0, output[-4000:]
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-4000:]
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)


def test_a_node_that_cannot_start_says_why_in_one_line():
    process = Process(["-m", "arx_r5_driver.executor_node", "--ros-args", "--params-file", ROBOT])  # backend: sdk
    code, output = process.finish(timeout=60)
    assert code == 1 and "Traceback" not in output
    assert "cannot start" in output and "arx_r5_sdk" in output.lower().replace("-", "_"), output
    # What it advises without the arms is what starts the executor in NODES above.
    assert SIM_ARMS_ARGUMENTS in output, output
    assert NODES["executor"][0][2:] == SIM_ARMS_ARGUMENTS.replace("config/robot.yaml", ROBOT).split()
    # A bad inference_mode left the policy node up with no policy, every later load failing.
    process = Process(["-m", "rotvla_common.run", POLICY, "--ros-args", "-p", "inference_mode:=warp"])
    code, output = process.finish(timeout=60)
    assert code == 1 and "Traceback" not in output and "parameter inference_mode: 'warp'" in output, output
    # Homing is a run-time switch (it starts from the arms' state): not a source to start with.
    process = Process(
        ["-m", "arx_r5_driver.executor_node", "--ros-args", "-p", "backend:=sim", "-p", "control_source:=home"]
    )
    code, output = process.finish(timeout=60)
    assert code == 1 and "Traceback" not in output and "control_source must be policy or teleop" in output, output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_composed_stack_stops_cleanly_and_leaves_nothing_behind(sig):
    process = Process(["-m", "rotvla_ros.nodes.runner", "--checkpoint", TINY])
    try:
        process.wait_for("serving")
        children = process.children()
        assert children, "the policy runs in a process of its own"
        time.sleep(2.0)
        process.signal(sig, group=True)
        code, output = process.finish(timeout=60)
        assert code == 0, output[-4000:]
        assert "Traceback" not in output and "terminate called" not in output, output[-4000:]
        time.sleep(0.5)
        assert not process.group_alive() and not any(running(pid) for pid in children), "a node outlived the runner"
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)


def test_the_stack_stops_when_a_required_node_dies():
    """The policy process killed from outside: the runner says so and stops everything, non-zero."""
    process = Process(["-m", "rotvla_ros.nodes.runner", "--checkpoint", TINY])
    try:
        process.wait_for("serving")
        children = process.children()
        assert children, "no policy process"
        os.kill(children[0], signal.SIGKILL)
        code, output = process.finish(timeout=60)
        assert code != 0 and "policy exited" in output, output[-3000:]
        time.sleep(0.5)
        assert not process.group_alive()
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)


def test_the_policy_process_goes_with_a_runner_killed_outright():
    process = Process(["-m", "rotvla_ros.nodes.runner", "--checkpoint", TINY])
    try:
        process.wait_for("serving")
        children = process.children()
        os.kill(process.proc.pid, signal.SIGKILL)  # the runner alone, with no chance to stop anything in order
        process.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in children), "the policy process outlived its runner"
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGKILL)
        for pid in children if "children" in locals() else []:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
