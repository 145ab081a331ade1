"""Camera ingestion node: three colour streams + joint state -> synchronised Observation.

Subscribes to ``<camera_namespace>/<camera>/color/image_raw`` (realsense2_camera's layout;
``color_topic`` is configurable since D405 colour was ``color/image_rect_raw`` in wrappers up
to 4.57.3) with a best-effort QoS that accepts reliable and best-effort publishers, to the
joint states and to each arm's EEF pose. As soon as every camera has delivered a frame
newer than the last observation (and, as a fallback, every ``step_period``), it asks the synchroniser
(``rotvla_ros.ingest.sync``) for the newest in-sync, fresh set with the robot state nearest
its capture stamp, crops and resizes it to the model's input size and publishes it on
``/rotvla/observation``, at most one per ``step_period`` of capture time. Polling on a
timer alone would hold every set until the next tick (up to a step period) and
pair it with the state of that later instant. Refused sets are counted by reason and
reported on ``/diagnostics`` with per-camera rate and age and the sync skew.

Images arrive serialized and are decoded with the rosbags CDR reader, whose pixel buffer is
a view of the received bytes: at 30 fps the node receives three frames for every one it
uses, and rclpy's own deserialisation copied each 640x480 frame (6x slower, measured).
"""

from __future__ import annotations

import threading

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String

from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES
from rotvla_common.contract import STEP_PERIOD, prepare_image
from rotvla_common.text import bounded
from rotvla_msgs.msg import Observation

from ..data.rosbag_types import make_typestore
from ..ingest.images import check_image, fill_image, image_to_rgb
from ..ingest.sync import JOINT_STATE, FrameSynchronizer, SyncedSet
from .common import (
    ERROR,
    LATCHED_QOS,
    OBSERVATION_QOS,
    OK,
    RELIABLE_QOS,
    SENSOR_QOS,
    WARN,
    Param,
    declare_table,
    diagnostic_array,
    now_seconds,
    run_node,
    to_seconds,
)

# The camera ingestion's parameters (config/robot.yaml and sim.yaml set the deployment's values).
PARAMETERS: dict[str, Param] = {
    "camera_names": Param(list(CAMERA_NAMES), "Cameras, in observation order."),
    "camera_namespace": Param(topics.CAMERAS, "Namespace of the cameras (realsense2_camera's camera_namespace)."),
    "color_topic": Param(
        "color/image_raw", "Colour topic under each camera (color/image_rect_raw for wrappers <= 4.57.3)."
    ),
    "step_period": Param(
        STEP_PERIOD, "The robot's step period, s: at most one observation per step of capture time.", low=1e-3
    ),
    "image_size": Param(224, "Side of the square model input, px.", low=8),
    "slop": Param(0.025, "Largest spread of capture stamps within one observation, s.", low=0.0),
    "max_age": Param(0.15, "Largest age of an observation's oldest image when published, s.", low=0.0),
    "state_max_offset": Param(
        0.1, "Largest time between the images' capture and the robot state paired with them, s.", low=0.0
    ),
    "require_state": Param(True, "Refuse observations without the robot state (joint states, EEF poses) at capture."),
    "joint_state_topic": Param(topics.JOINT_STATES, "Joint states of both arms."),
    "future_tolerance": Param(0.1, "Frames and states stamped further ahead of the clock (s) are refused.", low=0.0),
    "max_instruction_chars": Param(1000, "Longest instruction copied into observations.", low=1),
    "arms": Param(["left", "right"], "Arms whose EEF poses are included, in order."),
    "eef_pose_topic": Param(topics.EEF_POSE, "EEF poses arrive on <eef_pose_topic>/<arm>."),
}


def eef_source(arm: str) -> str:
    """The synchroniser's name for an arm's EEF pose stream."""
    return f"eef/{arm}"


class CameraIngestionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera_ingestion", **kwargs)
        values = declare_table(self, PARAMETERS)
        self.cameras = list(values["camera_names"])
        self.image_size = values["image_size"]
        self.max_instruction_chars = values["max_instruction_chars"]
        self.arms = list(values["arms"])
        rate = 1.0 / values["step_period"]
        self.instruction = ""
        self.sync = FrameSynchronizer(
            self.cameras,
            values["slop"],
            values["max_age"],
            values["state_max_offset"],
            values["require_state"],
            future_tolerance=values["future_tolerance"],
            state_sources=(JOINT_STATE, *(eef_source(arm) for arm in self.arms)),
            # 90% of a period: camera jitter must not make every other set too soon.
            min_interval=0.9 / rate,
        )
        self.max_age = values["max_age"]
        self.malformed = dict.fromkeys(self.cameras, 0)
        self.refused_instructions = 0
        self._future_at_last_report = 0
        self.sequence = 0
        self._drops_at_last_report = 0
        self._lock = threading.Lock()  # the synchroniser is fed and polled from several threads
        self._publishing = threading.Lock()  # one observation at a time, in sequence order
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._publisher_thread = threading.Thread(target=self._publish_when_woken, name="observations", daemon=True)

        self._create_interfaces(values, rate)
        # The clock going back (a simulation reset) makes every buffered frame one from the future.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_time_jump,
        )

    def _create_interfaces(self, values: dict, rate: float) -> None:
        self._typestore = make_typestore()
        inputs = MutuallyExclusiveCallbackGroup()
        for camera in self.cameras:
            topic = f"{values['camera_namespace'].rstrip('/')}/{camera}/{values['color_topic']}"
            self.create_subscription(
                Image, topic, lambda raw, c=camera: self._on_image(c, raw), SENSOR_QOS, callback_group=inputs, raw=True
            )
        self.create_subscription(
            JointState,
            values["joint_state_topic"],
            lambda msg: self._on_state(JOINT_STATE, msg),
            SENSOR_QOS,
            callback_group=inputs,
        )
        for arm in self.arms:
            self.create_subscription(
                PoseStamped,
                f"{values['eef_pose_topic']}/{arm}",
                lambda msg, a=arm: self._on_state(eef_source(a), msg),
                SENSOR_QOS,
                callback_group=inputs,
            )
        self.create_subscription(String, topics.INSTRUCTION, self._on_instruction, LATCHED_QOS, callback_group=inputs)
        self.publisher = self.create_publisher(Observation, topics.OBSERVATION, OBSERVATION_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        output = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / rate, self._publish_observation, callback_group=output)
        self._publisher_thread.start()
        self.create_timer(1.0, self._publish_diagnostics, callback_group=output)

    def _on_time_jump(self, jump) -> None:
        with self._lock:
            self.sync.reset()
        self.get_logger().info("the clock jumped back: buffered frames dropped")

    def _on_image(self, camera: str, raw: bytes) -> None:
        try:
            msg = self._typestore.deserialize_cdr(raw, "sensor_msgs/msg/Image")
            check_image(msg)
            stamp = to_seconds(msg.header.stamp)
        except Exception as error:  # whatever bytes arrive (truncated CDR: rosbags' SerdeError): a counted drop
            self.malformed[camera] += 1
            self.get_logger().error(
                f"{camera}: malformed image dropped: {type(error).__name__}: {bounded(str(error))}",
                throttle_duration_sec=2.0,
            )
            return
        with self._lock:
            self.sync.add_frame(camera, stamp, msg, now_seconds(self))
            ready = self.sync.ready()
        if ready:  # published by its own thread: the image callbacks never wait on a publish
            self._wake.set()

    def _on_state(self, source: str, msg: JointState | PoseStamped) -> None:
        with self._lock:
            self.sync.add_state(source, to_seconds(msg.header.stamp), msg, now_seconds(self))

    def _on_instruction(self, msg: String) -> None:
        if len(msg.data) > self.max_instruction_chars:
            self.refused_instructions += 1
            self.get_logger().error(
                f"instruction of {len(msg.data)} characters refused (max_instruction_chars "
                f"{self.max_instruction_chars}); keeping {bounded(self.instruction, 80)!r}"
            )
            return
        self.instruction = msg.data

    def _publish_when_woken(self) -> None:
        while not self._stopping.is_set():
            if self._wake.wait(timeout=0.5):
                self._wake.clear()
                try:
                    self._publish_observation()
                except Exception as error:  # the thread must outlive anything one set does
                    self.get_logger().error(f"observation not published: {type(error).__name__}: {error}")

    def destroy_node(self):
        self._stopping.set()
        if self._publisher_thread.is_alive():
            self._publisher_thread.join(timeout=2.0)
        super().destroy_node()

    def _publish_observation(self) -> None:
        with self._publishing:
            with self._lock:
                synced = self.sync.poll(now_seconds(self))
            if synced is not None:
                self._publish(synced)

    def _publish(self, synced: SyncedSet) -> None:
        obs = Observation()
        oldest = min((f.item.header.stamp for f in synced.frames.values()), key=to_seconds)
        obs.header.stamp = Time(sec=oldest.sec, nanosec=oldest.nanosec)
        obs.sequence = self.sequence
        obs.camera_names = self.cameras
        for camera in self.cameras:
            source = synced.frames[camera].item
            image = fill_image(Image(), prepare_image(image_to_rgb(source), self.image_size), "rgb8")
            stamp = source.header.stamp  # capture stamp and optical frame of this camera
            image.header = Header(stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec), frame_id=source.header.frame_id)
            obs.images.append(image)
        obs.sync_skew = synced.skew
        if synced.joint_state is not None:
            obs.joint_state = synced.joint_state.item
        obs.eef_poses = [synced.states[eef_source(a)].item for a in self.arms if eef_source(a) in synced.states]
        obs.instruction = self.instruction
        self.publisher.publish(obs)
        self.sequence += 1

    def _publish_diagnostics(self) -> None:
        now = now_seconds(self)
        with self._lock:
            stats, drops = self.sync.stats, dict(self.sync.drops)
            values = {"published": self.sync.published, "last_sync_skew_s": self.sync.last_skew or 0.0}
            for camera, s in stats.items():
                values[f"{camera}/rate_hz"] = s.rate()
                values[f"{camera}/age_s"] = (now - s.last_stamp) if s.last_stamp is not None else float("inf")
                values[f"{camera}/malformed"] = self.malformed[camera]
                values[f"{camera}/future"] = self.sync.future[camera]
            future_total = sum(self.sync.future.values())
        values.update({f"dropped/{reason}": count for reason, count in drops.items()})
        values["refused_instructions"] = self.refused_instructions
        silent = [c for c in self.cameras if values[f"{c}/age_s"] > 1.0]
        lagging = [c for c in self.cameras if self.max_age < values[f"{c}/age_s"] <= 1.0]
        new_future, self._future_at_last_report = future_total - self._future_at_last_report, future_total
        drops_total = sum(drops.values())
        new_drops, self._drops_at_last_report = drops_total - self._drops_at_last_report, drops_total
        # Every problem is named: a silent camera must not hide a clock that is off.
        problems: list[tuple[bytes, str]] = []
        if silent:
            problems.append((ERROR, f"no recent frames from {', '.join(silent)}"))
        if new_future:
            problems.append((ERROR, f"{new_future} frame(s) stamped in the future refused: a camera's clock is off"))
        if lagging:
            problems.append(
                (WARN, f"frames from {', '.join(lagging)} arrive older than max_age: a camera lags or drifts")
            )
        if new_drops:
            problems.append((WARN, f"dropped {new_drops} observation(s) in the last period"))
        level = max((lvl for lvl, _ in problems), default=OK)
        message = "; ".join(text for _, text in problems) or "synchronised"
        self.diagnostics.publish(diagnostic_array(self, "rotvla/camera_ingestion", level, message, values))


def main(args=None):
    run_node(CameraIngestionNode, args)


if __name__ == "__main__":
    main()
