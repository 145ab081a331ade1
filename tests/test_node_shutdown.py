"""Nodes started as processes stop cleanly and promptly on SIGINT (Ctrl-C) and SIGTERM
(what launch sends): no hung worker threads, exit code 0."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from rotvla_ros.model.config import tiny_config
from rotvla_ros.policy import RotVLAPolicy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    torch.manual_seed(0)
    RotVLAPolicy.from_config(tiny_config(), device="cpu").save_pretrained(path)
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("module", ["policy_node", "camera_ingestion"])
def test_node_process_exits_cleanly(module, sig, checkpoint):
    args = ["-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu"] if module == "policy_node" else []
    proc = subprocess.Popen([sys.executable, "-m", f"rotvla_ros.nodes.{module}", "--ros-args", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        marker = "serving" if module == "policy_node" else None
        deadline = time.monotonic() + 60
        if marker:
            while marker not in (line := proc.stdout.readline()):
                assert line or proc.poll() is None, "node exited early"
                assert time.monotonic() < deadline
        else:
            time.sleep(3)
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
            time.sleep(1)
            proc.kill()
            pytest.fail("node did not exit:\n" + proc.stdout.read()[-6000:])
        assert code == 0, proc.stdout.read()[-3000:]
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
