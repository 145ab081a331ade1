"""rotvla_check: the pre-flight check of a running cell, before anything may move.

    rotvla_check [--checkpoint DIR] [--serial head=123456789012 ...] [--listen 5] [--no-estop]
        [--ros-args -r __ns:=/cell_a]

It listens to the cell for ``--listen`` seconds (the executor's joint states and EEF poses,
every node's /diagnostics, their parameters over DDS), exercises the e-stop path, and prints
one line per item: PASS, FAIL or SKIP with what it measured. Exit 1 on any FAIL.

- executor: its lifecycle state (configured, so the arms are read);
- arms: joint states arriving, every joint inside the executor's limits, each gripper inside
  its range, each end effector inside its workspace box;
- cameras: each camera of the ingestion streaming at the observation rate at least, fresh;
  their clocks in step (the spread of one observation's capture stamps, no frame from the
  future); with ``--serial``, realsense2_camera's ``serial_no`` of each camera;
- e-stop: the executor holds on /rotvla/estop and lets go on /rotvla/resume;
- the checkpoint (``--checkpoint``, else the one the policy node serves): trained for this
  deployment (step period, image size, cameras, action layout: the policy node's contract);
- the policy's latency on this machine: the longest inference seen against its replan period.

The same code runs against the simulated cell and the robot; what the simulation cannot have
(serial numbers) is a SKIP that says so."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.srv import GetState
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from arx_r5_driver.kinematics import GRIPPER_MAX_OPENING_M
from rotvla_common import topics
from rotvla_common.action_space import ARMS
from rotvla_common.contract import STEP_PERIOD, Contract, contract_mismatches
from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS
from rotvla_msgs.msg import ExecutorStatus

from .common import GraphClient

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
EXECUTOR, INGESTION, POLICY_NODE = "arx_r5_executor", "camera_ingestion", "policy"
JOINT_MARGIN = 1e-3  # rad: a joint this close to a limit is at it, not past it


@dataclass
class Item:
    name: str
    verdict: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict}  {self.name:<26} {self.detail}"


@dataclass
class Observed:
    """What the cell showed while the check listened."""

    seconds: float = 0.0
    lifecycle: str = ""  # the executor's lifecycle state ("" : no answer)
    joint_states: int = 0  # messages received
    joint_state_span: float = 0.0  # s of the cell's clock between the first and the last one's stamps
    joints: dict[str, float] = field(default_factory=dict)  # the latest position of every joint
    eef: dict[str, np.ndarray] = field(default_factory=dict)  # arm -> the latest EEF position (base frame)
    diagnostics: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # node -> its values over time
    parameters: dict[str, dict] = field(default_factory=dict)  # node -> its parameters ({}: not found)
    serials: dict[str, str | None] = field(default_factory=dict)  # camera -> its driver's serial_no (None: no driver)


def _number(values: dict[str, str], key: str, default: float = float("nan")) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return default


def arm_items(observed: Observed) -> list[Item]:
    executor = observed.parameters.get(EXECUTOR, {})
    if observed.joint_states == 0:
        return [Item("arms answering", FAIL, f"no joint states in {observed.seconds:.0f} s")]
    # As received here, on the cell's clock (a simulation slowed by its machine is not a slow
    # robot); a busy machine drops some on the way, so it is shown, not judged: the camera
    # ingestion's diagnostics say whether each observation found the state of its capture.
    rate = (observed.joint_states - 1) / observed.joint_state_span if observed.joint_state_span > 0 else 0.0
    items = [Item("arms answering", PASS, f"joint states received at {rate:.0f} Hz")]
    lower, upper = np.asarray(executor.get("joint_lower", [])), np.asarray(executor.get("joint_upper", []))
    for arm in executor.get("arms", ARMS):
        names = [f"{arm}_joint{i}" for i in range(1, 7)]
        missing = [n for n in names if n not in observed.joints]
        if missing:
            items.append(Item(f"joint limits {arm}", FAIL, f"no reading of {', '.join(missing)}"))
            continue
        q = np.array([observed.joints[n] for n in names])
        if lower.size != 6 or upper.size != 6:
            items.append(Item(f"joint limits {arm}", SKIP, "the executor's limits are not known"))
        else:
            outside = [
                f"joint{i + 1} {q[i]:+.3f} rad outside [{lower[i]:+.3f}, {upper[i]:+.3f}]"
                for i in range(6)
                if not lower[i] - JOINT_MARGIN <= q[i] <= upper[i] + JOINT_MARGIN
            ]
            items.append(
                Item(f"joint limits {arm}", FAIL, "; ".join(outside))
                if outside
                else Item(f"joint limits {arm}", PASS, "every joint inside its limits")
            )
        gripper = observed.joints.get(f"{arm}_gripper")
        if gripper is None:
            items.append(Item(f"gripper {arm}", FAIL, "no reading"))
        else:
            inside = -JOINT_MARGIN <= gripper <= GRIPPER_MAX_OPENING_M + JOINT_MARGIN
            span = f"0-{GRIPPER_MAX_OPENING_M * 1000:.0f} mm"
            items.append(Item(f"gripper {arm}", PASS if inside else FAIL, f"{gripper * 1000:.1f} mm open ({span})"))
        low, high = executor.get(f"{arm}.workspace_min"), executor.get(f"{arm}.workspace_max")
        if arm not in observed.eef or low is None or high is None:
            items.append(Item(f"workspace {arm}", FAIL if arm not in observed.eef else SKIP, "no EEF pose"))
            continue
        xyz = observed.eef[arm]
        inside = bool(np.all(np.asarray(low) <= xyz) and np.all(xyz <= np.asarray(high)))
        items.append(
            Item(
                f"workspace {arm}",
                PASS if inside else FAIL,
                f"EEF at ({xyz[0]:+.3f}, {xyz[1]:+.3f}, {xyz[2]:+.3f}) m, box {list(low)}..{list(high)}",
            )
        )
    return items


def camera_items(observed: Observed, serials: dict[str, str]) -> list[Item]:
    ingestion = observed.parameters.get(INGESTION, {})
    if not ingestion:
        return [Item("camera ingestion", FAIL, "no camera_ingestion node")]
    cameras = list(ingestion.get("camera_names", []))
    rate = 1.0 / ingestion.get("step_period", STEP_PERIOD)
    max_age, slop = ingestion.get("max_age", 0.15), ingestion.get("slop", 0.025)
    reports = observed.diagnostics.get(INGESTION, [])
    latest = reports[-1] if reports else {}
    items = []
    for camera in cameras:
        hz, age = _number(latest, f"{camera}/rate_hz", 0.0), _number(latest, f"{camera}/age_s", float("inf"))
        if not latest:
            items.append(Item(f"camera {camera}", FAIL, "no diagnostics from the camera ingestion"))
        elif hz < 0.8 * rate or age > max(max_age, 1.0 / rate):
            items.append(Item(f"camera {camera}", FAIL, f"{hz:.1f} Hz, last frame {age:.2f} s old (needs {rate:g} Hz)"))
        else:
            items.append(Item(f"camera {camera}", PASS, f"{hz:.1f} Hz, last frame {age * 1000:.0f} ms old"))
        wanted, found = serials.get(camera), observed.serials.get(camera)
        if found is None:
            items.append(Item(f"serial {camera}", SKIP, "no realsense2_camera node (a simulated camera has none)"))
        elif not wanted:
            items.append(Item(f"serial {camera}", SKIP, f"{found} (no --serial given to compare)"))
        else:
            items.append(
                Item(
                    f"serial {camera}",
                    PASS if found.lstrip("_") == wanted.lstrip("_") else FAIL,
                    f"{found}, expected {wanted}",
                )
            )
    if latest:
        skew = _number(latest, "last_sync_skew_s", float("nan"))
        first = reports[0]  # the counts are the node's since its start: those of the window are wanted
        future = sum(_number(latest, f"{c}/future", 0.0) - _number(first, f"{c}/future", 0.0) for c in cameras)
        in_step = np.isfinite(skew) and skew <= slop and future == 0
        items.append(
            Item(
                "camera clocks",
                PASS if in_step else FAIL,
                f"capture stamps of one observation {skew * 1000:.1f} ms apart (slop {slop * 1000:.0f} ms), "
                f"{future:.0f} frames from the future",
            )
        )
    return items


def executor_item(observed: Observed) -> Item:
    if not observed.lifecycle:
        return Item("executor", FAIL, "no lifecycle answer from arx_r5_executor")
    if observed.lifecycle not in ("inactive", "active"):
        return Item("executor", FAIL, f"{observed.lifecycle}: the arms are not connected")
    return Item(
        "executor",
        PASS,
        f"{observed.lifecycle}"
        + (" (ros2 lifecycle set ... activate to move)" if observed.lifecycle == "inactive" else ""),
    )


def checkpoint_items(observed: Observed, checkpoint: Contract | None, checkpoint_name: str) -> list[Item]:
    policy = observed.parameters.get(POLICY_NODE, {})
    if not policy:
        return [Item("checkpoint contract", FAIL, "no policy node")]
    items = []
    if checkpoint is None:
        items.append(Item("checkpoint contract", FAIL, f"no checkpoint to check ({checkpoint_name or 'none served'})"))
    else:
        image_size = observed.parameters.get(INGESTION, {}).get("image_size", policy.get("image_size", 0))
        deployment = Contract(
            float(policy.get("step_period", 0.0)),
            int(policy.get("image_size") or image_size),
            tuple(policy.get("camera_names", ())),
            tuple(policy.get("action_names", ())),
        )
        mismatches = contract_mismatches(checkpoint, deployment)
        items.append(
            Item("checkpoint contract", FAIL, f"{checkpoint_name}: {'; '.join(mismatches)}")
            if mismatches
            else Item(
                "checkpoint contract",
                PASS,
                f"{checkpoint_name}: dt {checkpoint.dt:g} s, {checkpoint.image_size} px, "
                f"cameras {list(checkpoint.camera_names)}",
            )
        )
    inferences = [_number(v, "last_total_s") for v in observed.diagnostics.get(POLICY_NODE, [])]
    inferences = [t for t in inferences if np.isfinite(t)]
    period = float(policy.get("replan_period", 0.0)) or float(policy.get("step_period", STEP_PERIOD))
    if not inferences:
        items.append(Item("policy latency", FAIL, f"no inference reported in {observed.seconds:.0f} s"))
    else:
        worst = max(inferences)
        items.append(
            Item(
                "policy latency",
                PASS if worst <= period else FAIL,
                f"inference {worst * 1000:.0f} ms at most on this machine (replan period {period * 1000:.0f} ms)",
            )
        )
    return items


def evaluate(
    observed: Observed, serials: dict[str, str], checkpoint: Contract | None, checkpoint_name: str
) -> list[Item]:
    """Every item but the e-stop (which acts on the cell), from what was observed."""
    return [
        executor_item(observed),
        *arm_items(observed),
        *camera_items(observed, serials),
        *checkpoint_items(observed, checkpoint, checkpoint_name),
    ]


class CheckClient(GraphClient):
    """The check's side of the graph."""

    def __init__(self):
        super().__init__("rotvla_check")
        self.statuses: list[tuple[float, int]] = []  # (wall time received, mode)
        self.node.create_subscription(
            ExecutorStatus, topics.EXECUTOR_STATUS, lambda m: self.statuses.append((time.monotonic(), m.mode)), 10
        )

    def observe(self, seconds: float, cameras_with_serials: dict[str, str]) -> Observed:
        observed = Observed(seconds=seconds)

        first_stamp = []

        def on_joints(msg: JointState) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            first_stamp[:] = first_stamp or [stamp]
            observed.joint_state_span = stamp - first_stamp[0]
            observed.joint_states += 1
            observed.joints.update(zip(msg.name, map(float, msg.position)))

        def on_pose(arm: str, msg: PoseStamped) -> None:
            p = msg.pose.position
            observed.eef[arm] = np.array([p.x, p.y, p.z])

        names = {f"{self.namespace}/{n}": n for n in (EXECUTOR, INGESTION, POLICY_NODE)}

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.hardware_id in names:
                    values = {kv.key: kv.value for kv in status.values}
                    observed.diagnostics.setdefault(names[status.hardware_id], []).append(values)

        self.node.create_subscription(JointState, topics.JOINT_STATES, on_joints, SENSOR_QOS)
        for arm in ARMS:
            self.node.create_subscription(PoseStamped, topics.eef_pose(arm), lambda m, a=arm: on_pose(a, m), SENSOR_QOS)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diagnostics, RELIABLE_QOS)
        self.spin_for(seconds)
        for node in (EXECUTOR, INGESTION, POLICY_NODE):
            observed.parameters[node] = self.parameters(node)
        state = self.call(GetState, f"{EXECUTOR}/get_state", GetState.Request())
        observed.lifecycle = state.current_state.label if state is not None else ""
        graph = {(ns.rstrip("/"), n) for n, ns in self.node.get_node_names_and_namespaces()}
        for camera in observed.parameters.get(INGESTION, {}).get("camera_names", []):
            driver = (f"{self.namespace}/{topics.CAMERAS}", camera)  # realsense2_camera's node
            if driver in graph:
                found = self.parameters(f"{topics.CAMERAS}/{camera}").get("serial_no")
                observed.serials[camera] = str(found) if found is not None else "(no serial_no parameter)"
            else:
                observed.serials[camera] = None
        return observed

    def estop_round_trip(self) -> Item:
        """Engage the e-stop, see the executor hold, release it, see it let go."""
        asked = time.monotonic()
        if self.call(Trigger, topics.ESTOP, Trigger.Request()) is None:
            return Item("e-stop", FAIL, "no answer from /rotvla/estop")
        held = self.spin_for(2.0, lambda: any(t >= asked and m == ExecutorStatus.MODE_ESTOP for t, m in self.statuses))
        released_at = time.monotonic()
        resumed = self.call(Trigger, topics.RESUME, Trigger.Request())
        if not held:
            return Item("e-stop", FAIL, "the executor's status never said e-stop within 2 s")
        latency = min(t for t, m in self.statuses if t >= asked and m == ExecutorStatus.MODE_ESTOP) - asked
        let_go = resumed is not None and self.spin_for(
            2.0, lambda: any(t > released_at and m != ExecutorStatus.MODE_ESTOP for t, m in self.statuses)
        )
        if not let_go:
            return Item("e-stop", FAIL, f"held after {latency * 1000:.0f} ms but not released by /rotvla/resume")
        return Item("e-stop", PASS, f"held {latency * 1000:.0f} ms after the call, released by /rotvla/resume")


def checkpoint_contract(path: str) -> tuple[Contract | None, str]:
    from ..policy import CheckpointError, read_contract

    if not path:
        return None, ""
    try:
        return read_contract(path), Path(path).name
    except (CheckpointError, OSError) as error:
        return None, f"{path}: {error}"


def main(argv=None) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from rotvla_common.arguments import number

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", default="", help="checkpoint directory (default: the one the policy node serves)"
    )
    parser.add_argument(
        "--serial", action="append", default=[], metavar="CAMERA=SERIAL", help="a camera's expected serial number"
    )
    parser.add_argument("--listen", type=number(1.0, 120.0), default=5.0, help="s to listen to the cell")
    parser.add_argument("--no-estop", action="store_true", help="leave the e-stop path unchecked")
    args, ros_args = parser.parse_known_args(argv)
    serials = {}
    for item in args.serial:
        camera, sep, serial = item.partition("=")
        if not sep or not serial.strip():
            parser.error(f"--serial {item!r}: CAMERA=SERIAL expected")
        serials[camera.strip()] = serial.strip()
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        client = CheckClient()
        try:
            observed = client.observe(args.listen, cameras_with_serials=serials)
            name = args.checkpoint or str(observed.parameters.get(POLICY_NODE, {}).get("checkpoint", ""))
            contract, label = checkpoint_contract(name)
            items = evaluate(observed, serials, contract, label or name)
            items.append(Item("e-stop", SKIP, "--no-estop") if args.no_estop else client.estop_round_trip())
        finally:
            client.close()
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()
    for item in items:
        print(item.line(), flush=True)
    failed = [item.name for item in items if item.verdict == FAIL]
    print(
        f"{len(items) - len(failed)} of {len(items)} items pass" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
