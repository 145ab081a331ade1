"""rotvla_calibrate_latency: measure the camera and arm-command latencies of a running cell and
write them as a parameter overlay for the bringup (``params_file:=``).

    rotvla_calibrate_latency [--arm left] [--axis y] [--amplitude 0.02] [--frequency 0.5]
        [--periods 6] [--output config/latency.yaml] [--ros-args -r __ns:=/cell_a]

THE ARM MOVES: one end effector swings +-``amplitude`` along one axis of its base frame for
about (periods + 2) / frequency seconds, under the executor's safety filter and speed caps,
the other arm holding its pose. It needs the executor active and driven by the policy source,
and no policy running (``policy:=false``): the calibration sends the chunks in the policy's
place, as the node the executor takes chunks from (its ``chunk_source``).

What it measures (``rotvla_ros.calibration``): the arm's command-to-motion latency, from the
lag of the measured end effector behind the commanded one (corrected for what the executor
already compensates); the camera's exposure-to-stamp latency, from the lag of the moving arm's
wrist view behind the measured end effector. Both are printed, with the fits behind them, and
written to ``--output`` as the executor's ``latency.camera`` and ``latency.arm_command``. The
joint readings are taken as the truth of where the arm is: their own delay (a CAN round trip
on the robot, nothing in simulation) counts as the arm's and is missing from the camera's.
In simulation, the sim node's ``camera_delay`` and ``command_delay`` inject known latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image, JointState

from arx_r5_driver.kinematics import joint_names
from rotvla_common import topics
from rotvla_common.action_space import ARMS, DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import STEP_PERIOD, eef_state
from rotvla_msgs.msg import ActionChunk, ExecutorStatus

from ..calibration import Excitation, LatencyEstimate, estimate
from ..ingest.images import ImageFormatError, image_to_rgb
from .common import RELIABLE_QOS, SENSOR_QOS, GraphClient, to_duration, to_seconds, to_time

EXECUTOR, INGESTION = "arx_r5_executor", "camera_ingestion"
HORIZON = 16  # steps per chunk: as long as a policy's, so a late chunk never starves the arm
AXES = {"x": 0, "y": 1, "z": 2}
POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)


class CalibrationError(RuntimeError):
    """The cell is not in a state to calibrate; the message says what to change."""


class LatencyCalibration(GraphClient):
    def __init__(self, excitation: Excitation):
        super().__init__("rotvla_calibrate_latency")
        self.excitation = excitation
        self.poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # arm -> (xyz, 3x3), newest
        self.grippers: dict[str, float] = {}
        self.measured: list[tuple[float, float]] = []  # (stamp, position along the axis) of the moving arm
        self.frames: list[tuple[float, np.ndarray]] = []  # (stamp, rgb) of its wrist camera
        self.status: ExecutorStatus | None = None
        self.recording = False
        self.source_node: Node | None = None
        self.recorded: dict = {}  # estimate's arguments from the last run

    def prepare(self) -> dict:
        """The executor's parameters, after checking that the calibration may move the arm."""
        executor = self.parameters(EXECUTOR)
        if not executor:
            raise CalibrationError(f"no executor answers at {self.namespace}/{EXECUTOR}")
        if executor.get("use_sim_time"):  # chunks are stamped on the executor's clock (a simulated cell's)
            self.node.set_parameters([Parameter("use_sim_time", value=True)])
        source = str(executor.get("chunk_source", "policy"))
        arm = self.excitation.arm
        arms = list(executor.get("arms", ARMS))
        ingestion = self.parameters(INGESTION)
        namespace = str(ingestion.get("camera_namespace", topics.CAMERAS)).rstrip("/")
        colour = str(ingestion.get("color_topic", "color/image_raw"))
        self.node.create_subscription(ExecutorStatus, topics.EXECUTOR_STATUS, self._on_status, RELIABLE_QOS)
        # The start pose of both arms; then the moving arm's every pose, queued deep enough that
        # a busy moment here loses none (a gap would be interpolated over, and bias the fit).
        joints = self.node.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, SENSOR_QOS)
        poses = [
            self.node.create_subscription(
                PoseStamped, topics.eef_pose(name), lambda m, a=name: self._on_pose(a, m), POSE_QOS
            )
            for name in arms
        ]
        self.node.create_subscription(Image, f"{namespace}/{arm}_wrist/{colour}", self._on_image, SENSOR_QOS)
        ready = self.spin_for(
            10.0,
            lambda: (
                self.status is not None
                and self._now() > 0.0  # the simulated clock has ticked
                and all(a in self.poses and a in self.grippers for a in arms)
            ),
        )
        if not ready:
            raise CalibrationError("no executor status, end-effector poses or joint states within 10 s")
        if arm not in arms:
            raise CalibrationError(f"the executor drives {arms}, not {arm}")
        # Discovery of another process's nodes takes a second or two (the executor's messages
        # may arrive sooner): the graph is asked after that, not as soon as the cell answers.
        self.spin_for(2.5)
        graph = {(ns.rstrip("/"), n) for n, ns in self.node.get_node_names_and_namespaces()}
        if (self.namespace, source) in graph or self.node.count_publishers(topics.ACTION_CHUNK) > 0:
            raise CalibrationError(
                f"{self.namespace}/{source} is running or chunks have a publisher: stop the policy "
                "(policy:=false) so that the calibration alone sends chunks"
            )
        self.node.destroy_subscription(joints)
        for name, subscription in zip(arms, poses):
            if name != arm:
                self.node.destroy_subscription(subscription)
        status = self.status
        if status.dry_run:
            raise CalibrationError("the executor is in a dry run: nothing would move (restart without dry_run)")
        if status.control_source != "policy" or status.mode in (ExecutorStatus.MODE_ESTOP, ExecutorStatus.MODE_TELEOP):
            raise CalibrationError(
                f"the executor is driven by {status.control_source!r} (mode {status.mode}): it must follow chunks "
                "(rotvla_ctl source policy; no e-stop)"
            )
        self.source_node = Node(source, parameter_overrides=[Parameter("use_sim_time", value=self._sim_time)])
        self.executor.add_node(self.source_node)
        self.publisher = self.source_node.create_publisher(ActionChunk, topics.ACTION_CHUNK, RELIABLE_QOS)
        self.spin_for(1.0)  # the executor learns who the new publisher is
        return executor

    @property
    def _sim_time(self) -> bool:
        return bool(self.node.get_parameter("use_sim_time").value)

    def _on_status(self, msg: ExecutorStatus) -> None:
        self.status = msg

    def _on_joints(self, msg: JointState) -> None:
        positions = dict(zip(msg.name, msg.position))
        for arm in ARMS:
            gripper = joint_names(arm)[-1]
            if gripper in positions:
                self.grippers[arm] = float(positions[gripper])

    def _on_pose(self, arm: str, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        xyz = np.array([p.x, p.y, p.z])
        self.poses[arm] = (xyz, Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix())
        if self.recording and arm == self.excitation.arm:
            self.measured.append((to_seconds(msg.header.stamp), float(xyz[self.excitation.axis])))

    def _on_image(self, msg: Image) -> None:
        if not self.recording:
            return
        with contextlib.suppress(ImageFormatError):  # a frame the ingestion would refuse too: one sample fewer
            self.frames.append((to_seconds(msg.header.stamp), image_to_rgb(msg).copy()))

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def run(self, compensation: float) -> LatencyEstimate:
        """Swing the arm, record, fit."""
        exc = self.excitation
        home = {arm: (pose[0].copy(), pose[1].copy(), self.grippers[arm]) for arm, pose in self.poses.items()}
        start = self._now() + 2 * STEP_PERIOD
        self.recording = True
        sequence, next_chunk = 0, self._now()
        deadline = time.monotonic() + 10.0 * exc.duration + 30.0  # wall time: a slow simulation is fine
        while self._now() < start + exc.duration + 1.0:  # and a second to settle, recorded
            if time.monotonic() > deadline:
                raise CalibrationError("the cell's clock stopped advancing (is the simulation paused?)")
            now = self._now()
            if now >= next_chunk:
                self.publisher.publish(self._chunk(sequence, now, start, home))
                sequence += 1
                next_chunk = now + STEP_PERIOD
            self.executor.spin_once(timeout_sec=0.005)
        self.recording = False
        if not self.frames:
            raise CalibrationError(f"no frame from the {exc.arm} wrist camera")
        self.recorded = {
            "start": start,
            "pose_times": np.array([t for t, _ in self.measured]),
            "positions": np.array([x for _, x in self.measured]),
            "frame_times": np.array([t for t, _ in self.frames]),
            "frames": np.stack([f for _, f in self.frames]),
            "compensation": compensation,
        }
        return estimate(exc, **self.recorded)

    def _chunk(self, sequence: int, now: float, start: float, home: dict) -> ActionChunk:
        """Steps at now + (i + 1) dt, as a policy's chunk stamped now: the moving arm at its
        start pose plus the excitation's offset then, the other as it was."""
        exc = self.excitation
        times = now + STEP_PERIOD * np.arange(1, HORIZON + 1)  # (H,)
        offsets = exc.offset(times - start)  # (H,)
        rows = []
        for offset in offsets:
            row = []
            for arm in ARMS:  # the order of DUAL_ARM_EEF_ACTION_NAMES
                xyz, rotation, gripper = home[arm]
                xyz = xyz.copy()
                if arm == exc.arm:
                    xyz[exc.axis] += offset
                row.append(eef_state(xyz, rotation, gripper))
            rows.append(np.concatenate(row))
        actions = np.stack(rows).astype(np.float32)  # (H, 20)
        chunk = ActionChunk()
        chunk.header.stamp = to_time(now)
        chunk.sequence = sequence
        chunk.checkpoint_id = "rotvla_calibrate_latency"
        chunk.dt = to_duration(STEP_PERIOD)
        chunk.horizon = HORIZON
        chunk.action_names = list(DUAL_ARM_EEF_ACTION_NAMES)
        chunk.actions = actions.ravel().tolist()
        return chunk

    def close(self) -> None:
        if self.source_node is not None:
            self.source_node.destroy_node()
        super().close()


def overlay(result: LatencyEstimate, executor_name: str = EXECUTOR) -> str:
    """The parameter file that sets the executor's latencies (applied after config/robot.yaml)."""
    return (
        f"# rotvla_calibrate_latency, {time.strftime('%Y-%m-%d %H:%M')}: measured, not guessed.\n"
        f"# camera: the wrist view's lag behind the measured arm (R^2 {result.camera_r2:.3f}); arm_command:\n"
        f"# the measured arm's lag behind the command (R^2 {result.arm_r2:.3f}), plus what was compensated.\n"
        f"/**/{executor_name}:\n"
        "  ros__parameters:\n"
        "    latency:\n"
        f"      camera: {max(result.camera, 0.0):.4f}\n"
        f"      arm_command: {max(result.arm_command, 0.0):.4f}\n"
    )


def main(argv=None) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from rotvla_common.arguments import integer, number

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=("left", "right"), default="left", help="the arm that moves")
    parser.add_argument("--axis", choices=tuple(AXES), default="y", help="along this axis of its base frame")
    parser.add_argument("--amplitude", type=number(0.001, 0.05), default=0.02, help="m")
    parser.add_argument("--frequency", type=number(0.1, 2.0), default=0.5, help="Hz")
    parser.add_argument("--periods", type=integer(2, 50), default=6, help="periods at full amplitude (fitted)")
    parser.add_argument("--output", type=Path, default=None, help="write the overlay here (params_file:=)")
    parser.add_argument(
        "--save", type=Path, default=None, help="keep the recorded signals (npz: stamps, positions, frames) to inspect"
    )
    args, ros_args = parser.parse_known_args(argv)
    excitation = Excitation(
        arm=args.arm, axis=AXES[args.axis], amplitude=args.amplitude, frequency=args.frequency, periods=args.periods
    )
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        calibration = LatencyCalibration(excitation)
        try:
            executor = calibration.prepare()
            compensation = float(executor.get("latency.camera", 0.0)) + float(executor.get("latency.arm_command", 0.0))
            print(
                f"moving the {excitation.arm} arm +-{excitation.amplitude * 100:.1f} cm along {args.axis} at "
                f"{excitation.frequency:g} Hz for {excitation.duration:.0f} s of the cell's clock",
                flush=True,
            )
            try:
                result = calibration.run(compensation)
            finally:
                if args.save is not None and calibration.recorded:
                    np.savez_compressed(args.save, **calibration.recorded)
        finally:
            calibration.close()
    except CalibrationError as error:
        print(f"rotvla_calibrate_latency: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # too few samples to fit
        print(f"rotvla_calibrate_latency: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()
    camera, arm = result.camera * 1000, result.arm_command * 1000
    print(f"camera       {camera:7.1f} ms  (wrist view against the measured arm, R^2 {result.camera_r2:.3f}, ", end="")
    print(f"{result.samples[1]} frames)")
    print(f"arm_command  {arm:7.1f} ms  (measured arm against the command, R^2 {result.arm_r2:.3f}, ", end="")
    print(f"{result.samples[0]} poses; {compensation * 1000:.0f} ms of it compensated already)")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(overlay(result))
        print(f"written to {args.output}: ros2 launch rotvla_ros bringup.launch.py params_file:={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
