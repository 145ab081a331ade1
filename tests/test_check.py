"""Issue 31 item 2: rotvla_check, the pre-flight check. Against the simulated cell (the
composed stack, each check a process of its own as a user runs it) it passes; each fault
injected fails the line that names it: a checkpoint trained for another deployment, a camera
whose serial number is not the one expected, an arm outside its joint limits, a camera that
sends nothing."""

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT

pytest.importorskip("rclpy")

from rclpy.node import Node  # noqa: E402

from rotvla_common.contract import Contract  # noqa: E402
from rotvla_ros.nodes.check import FAIL, PASS, Observed, evaluate  # noqa: E402

HOME = [0.0, -1.9, -1.0, -0.5, 0.0, 0.0]


def healthy() -> Observed:
    joints = {f"{arm}_joint{i + 1}": q for arm in ("left", "right") for i, q in enumerate(HOME)}
    joints.update(left_gripper=0.08, right_gripper=0.08)
    cameras = ("head", "left_wrist", "right_wrist")
    report = {"last_sync_skew_s": "0.0", **{f"{c}/rate_hz": "10.0" for c in cameras}}
    report.update({f"{c}/age_s": "0.1" for c in cameras} | {f"{c}/future": "0" for c in cameras})
    names = tuple(f"{arm}/{f}" for arm in ("left", "right") for f in ("x", "y", "z", "gripper"))
    return Observed(
        seconds=5.0,
        lifecycle="active",
        joint_states=151,
        joint_state_span=3.0,
        joints=joints,
        eef={arm: np.array([0.3, 0.0, 0.1]) for arm in ("left", "right")},
        diagnostics={"camera_ingestion": [report], "policy": [{"last_total_s": "0.08"}]},
        parameters={
            "arx_r5_executor": {
                "arms": ["left", "right"],
                "joint_lower": [-3.14, -3.6, -1.57, -1.3, -1.57, -2.1],
                "joint_upper": [2.6, 0.1, 1.57, 1.3, 1.57, 2.1],
                **{f"{a}.workspace_min": [0.05, -0.45, -0.12] for a in ("left", "right")},
                **{f"{a}.workspace_max": [0.6, 0.45, 0.45] for a in ("left", "right")},
            },
            "camera_ingestion": {"camera_names": list(cameras), "step_period": 0.1, "max_age": 0.3, "slop": 0.025},
            "policy": {
                "step_period": 0.1,
                "image_size": 84,
                "camera_names": list(cameras),
                "action_names": list(names),
            },
        },
        serials={c: None for c in cameras},
    ), Contract(0.1, 84, ("head", "left_wrist"), names)


def verdicts(observed, contract, serials=None) -> dict[str, str]:
    return {item.name: item.verdict for item in evaluate(observed, serials or {}, contract, "ckpt")}


def test_each_fault_fails_the_line_that_names_it():
    observed, contract = healthy()
    assert set(verdicts(observed, contract).values()) <= {PASS, "SKIP"}
    observed.joints["left_joint2"] = 0.5  # past joint2's upper limit (0.1)
    assert [k for k, v in verdicts(observed, contract).items() if v == FAIL] == ["joint limits left"]
    observed, contract = healthy()
    observed.diagnostics["camera_ingestion"][0]["left_wrist/rate_hz"] = "0.0"
    assert [k for k, v in verdicts(observed, contract).items() if v == FAIL] == ["camera left_wrist"]
    observed, contract = healthy()
    observed.serials["head"] = "_111122223333"
    assert verdicts(observed, contract, {"head": "111122223333"})["serial head"] == PASS
    assert verdicts(observed, contract, {"head": "999988887777"})["serial head"] == FAIL
    observed, _ = healthy()
    wrong = Contract(0.2, 84, ("head", "left_wrist"), contract.action_names)
    assert [k for k, v in verdicts(observed, wrong).items() if v == FAIL] == ["checkpoint contract"]
    observed, contract = healthy()
    observed.eef["right"] = np.array([0.9, 0.0, 0.1])  # outside the workspace box
    observed.joints["right_gripper"] = 0.2  # no R5 gripper opens 20 cm
    assert [k for k, v in verdicts(observed, contract).items() if v == FAIL] == ["gripper right", "workspace right"]


def run_check(*args: str, timeout: float = 120) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "rotvla_ros.nodes.check", "--listen", "3", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


def line(output: str, name: str) -> str:
    (found,) = [row for row in output.splitlines() if row[6:].startswith(name + " ")]
    return found


@pytest.mark.timeout(900)
def test_rotvla_check_passes_on_the_simulated_cell_and_fails_each_injected_fault(tmp_path, peer_factory, ros):
    stack = peer_factory(sys.executable, "-m", "rotvla_ros.nodes.runner", "--seconds", "600")
    stack.wait_ready("serving ", timeout=240)  # the policy node's first checkpoint is warm
    deadline, (code, output) = time.monotonic() + 120, (None, "")
    while code != 0 and time.monotonic() < deadline:  # the stack starts, the policy warms up
        code, output = run_check()
    assert code == 0, output + "".join(stack.lines[-20:])
    assert "18 of 18 items pass" in output and "SKIP  serial head" in output, output

    # A checkpoint trained at another step period.
    other = tmp_path / "other-rate"
    shutil.copytree(REPO_ROOT / "models" / "sim-block_to_plate", other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["dt"] = 0.2
    (other / "config.json").write_text(json.dumps(config))
    code, output = run_check("--checkpoint", str(other), "--no-estop")
    assert code == 1 and "step period 0.2 s" in line(output, "checkpoint contract"), output
    assert line(output, "checkpoint contract").startswith(FAIL)

    # A D405 whose serial number is not the one the cell was set up with (realsense2_camera's
    # node and parameter, stood in).
    camera = ros.add(Node("head", namespace="cameras"))
    camera.declare_parameter("serial_no", "_111122223333")
    code, output = run_check("--serial", "head=999988887777", "--no-estop")
    assert code == 1 and line(output, "serial head").startswith(FAIL), output
    code, output = run_check("--serial", "head=111122223333", "--no-estop")
    assert code == 0 and line(output, "serial head").startswith(PASS), output
    assert stack.stop() == 0, "".join(stack.lines[-20:])

    # An arm outside its joint limits (joint2 narrowed below the pose the arms start in; the
    # executor inactive, so nothing moves them in) and a camera that sends nothing.
    config_dir = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config_dir)
    robot = yaml.safe_load((config_dir / "robot.yaml").read_text())
    (executor,) = [section for key, section in robot.items() if key.endswith("arx_r5_executor")]
    executor["ros__parameters"]["joint_upper"][1] = -2.0
    (config_dir / "robot.yaml").write_text(yaml.safe_dump(robot))
    faulty = peer_factory(
        sys.executable,
        "-m",
        "rotvla_ros.nodes.runner",
        "--seconds",
        "300",
        "--no-policy",
        "--executor-state",
        "inactive",
        "--config-dir",
        str(config_dir),
        "--ros-args",
        "-r",
        "sim:cameras/right_wrist/color/image_raw:=unplugged/right_wrist",
    )
    deadline, output = time.monotonic() + 180, ""
    while "PASS  camera head" not in output and time.monotonic() < deadline:
        code, output = run_check("--no-estop")
    assert code == 1, output
    for name in ("joint limits left", "joint limits right", "camera right_wrist"):
        assert line(output, name).startswith(FAIL), output
    assert re.search(r"joint2 -1\.(89|90)\d rad outside \[-3\.600, -2\.000\]", line(output, "joint limits left")), (
        output
    )
    assert line(output, "executor").startswith(PASS) and "inactive" in line(output, "executor"), output
    assert faulty.stop() == 0, "".join(faulty.lines[-20:])
