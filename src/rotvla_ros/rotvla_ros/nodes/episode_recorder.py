"""Episode recorder: one rosbag2 (MCAP) directory per demonstration, with its metadata.

- ``/rotvla/recorder/start`` (StartEpisode: task, instruction, operator) opens a bag in
  ``<output_dir>/.<episode>.partial``; ``/rotvla/recorder/stop`` (StopEpisode: success flag,
  notes) closes it, writes ``episode.json`` beside the bag's own metadata and renames the
  directory to ``<output_dir>/<episode>``: a directory without the dot is always complete.
  ``/rotvla/recorder/discard`` (std_srvs/Trigger) deletes the episode being recorded.
- Subscriptions are serialized (``raw=True``): messages go to the bag as they came off the
  wire, never deserialised; each is written at its receive time on the node's clock (sim
  time in simulation); the converter aligns on header stamps.
- The bags are ordinary rosbag2: ``ros2 bag info`` and ``rosbags`` read them.
- A write that fails (a full disk) ends the episode there and never the node: what the bag
  holds is kept under the episode's name with ``"complete": false`` and the error in its
  ``episode.json`` (written when the episode starts, so that it exists whatever the disk has
  left), the next stop call answers with the failure, and /diagnostics reports it.
  ``rotvla_convert`` reads such an episode up to its last complete message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rosbags.rosbag2 import StoragePlugin, Writer
from std_srvs.srv import Trigger

from rotvla_common import topics
from rotvla_common.text import bounded
from rotvla_msgs.srv import StartEpisode, StopEpisode

from ..bringup import RECORD_TOPICS
from ..data.rosbag_types import make_typestore
from .common import ERROR, LATCHED_QOS, OK, RELIABLE_QOS, SENSOR_QOS, declare, diagnostic_array, run_node

# The type of every recordable topic (a bag must name its types before the first message).
TOPIC_TYPES = {
    **{t: "sensor_msgs/msg/Image" for t in RECORD_TOPICS if t.endswith("image_raw")},
    **{t: "sensor_msgs/msg/CameraInfo" for t in RECORD_TOPICS if t.endswith("camera_info")},
    topics.absolute(topics.JOINT_STATES): "sensor_msgs/msg/JointState",
    topics.absolute(topics.TELEOP_INTENDED): "sensor_msgs/msg/JointState",
    topics.absolute(topics.eef_pose("left")): "geometry_msgs/msg/PoseStamped",
    topics.absolute(topics.eef_pose("right")): "geometry_msgs/msg/PoseStamped",
    topics.absolute(topics.ACTION_CHUNK): "rotvla_msgs/msg/ActionChunk",
    topics.absolute(topics.EXECUTOR_STATUS): "rotvla_msgs/msg/ExecutorStatus",
    topics.absolute(topics.INSTRUCTION): "std_msgs/msg/String",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    topics.CLOCK: "rosgraph_msgs/msg/Clock",
}
MAX_TEXT = 2000  # characters of a task, instruction, operator or note kept in episode.json
DEFAULT_TOPICS = [t for t in RECORD_TOPICS if t not in ("/tf", "/tf_static", topics.CLOCK)]


def default_output_dir() -> Path:
    """$ROS_HOME/rotvla_demos (~/.ros/rotvla_demos): absolute, whatever directory launch runs in."""
    return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros").expanduser().resolve() / "rotvla_demos"


def _message_class(type_name: str):
    package, _, name = type_name.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    return getattr(module, name)


class _Episode:
    def __init__(self, partial: Path, final: Path, writer: Writer, meta: dict):
        self.partial, self.final, self.writer, self.meta = partial, final, writer, meta
        self.connections: dict[str, object] = {}
        self.count = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None


class EpisodeRecorder(Node):
    def __init__(self, **kwargs):
        super().__init__("episode_recorder", **kwargs)
        p = functools.partial(declare, self)
        output_dir = p(
            "output_dir",
            "",
            "Where episode bags are written (empty: $ROS_HOME/rotvla_demos, ROS_HOME being ~/.ros by default).",
        )
        self.output_dir = Path(output_dir).expanduser().resolve() if output_dir else default_output_dir()
        recorded = p("topics", DEFAULT_TOPICS, "Topics recorded in every episode.", read_only=True)
        self.robot_config = p("robot_config", "", "A robot configuration file copied into each episode's metadata.")
        unknown = sorted(set(recorded) - set(TOPIC_TYPES))
        if unknown:
            raise ValueError(f"no known type for topics {unknown}")
        self.typestore = make_typestore()
        self._lock = threading.Lock()  # guards _episode
        self._episode: _Episode | None = None
        record = MutuallyExclusiveCallbackGroup()
        for topic in recorded:
            qos = SENSOR_QOS if TOPIC_TYPES[topic].startswith("sensor_msgs") or "eef_pose" in topic else RELIABLE_QOS
            if topic == topics.absolute(topics.INSTRUCTION):
                qos = LATCHED_QOS
            self.create_subscription(
                _message_class(TOPIC_TYPES[topic]),
                topic.lstrip("/"),  # the cell's topics: resolved in this node's namespace
                lambda data, t=topic: self._write(t, data),
                qos,
                raw=True,
                callback_group=record,
            )
        services = ReentrantCallbackGroup()
        self.create_service(StartEpisode, topics.RECORDER_START, self._on_start, callback_group=services)
        self.create_service(StopEpisode, topics.RECORDER_STOP, self._on_stop, callback_group=services)
        self.create_service(Trigger, topics.RECORDER_DISCARD, self._on_discard, callback_group=services)
        self._failure = ""  # an episode a write error ended, until a stop call has reported it
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"recording {len(recorded)} topics into {self.output_dir}/ on request")

    # -- services -------------------------------------------------------------------------

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response):
        with self._lock:
            if self._episode is not None:
                response.success, response.message = (
                    False,
                    f"episode {self._episode.meta['episode_id']} is being recorded",
                )
                return response
            # The task names a directory: only its safe characters, bounded (never a path).
            slug = re.sub(r"[^A-Za-z0-9_-]+", "_", request.task)[:64].strip("_") or "episode"
            episode_id = time.strftime("%Y%m%d-%H%M%S") + f"-{slug}"
            final = self.output_dir / episode_id
            partial = self.output_dir / f".{episode_id}.partial"
            if final.exists() or partial.exists():
                response.success, response.message = False, f"{final} exists"
                return response
            meta = {
                "episode_id": episode_id,
                "task": bounded(request.task, MAX_TEXT),
                "instruction": bounded(request.instruction, MAX_TEXT),
                "operator": bounded(request.operator_name, MAX_TEXT),
                "start_time": self.get_clock().now().nanoseconds * 1e-9,
                "robot_config": Path(self.robot_config).read_text() if self.robot_config else "",
                "complete": False,  # until stop: an episode a failure ended says so
            }
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                partial.mkdir()
                (partial / "episode.json").write_text(json.dumps(meta, indent=2))
                writer = Writer(partial / "bag", version=8, storage_plugin=StoragePlugin.MCAP)
                writer.open()
            except OSError as error:
                shutil.rmtree(partial, ignore_errors=True)
                response.success, response.message = False, f"cannot start an episode in {self.output_dir}: {error}"
                self.get_logger().error(response.message)
                return response
            self._episode = _Episode(partial, final, writer, meta)
        self.get_logger().info(f"recording episode {episode_id}")
        response.success, response.message = True, "recording"
        response.episode_id, response.path = episode_id, str(final)
        return response

    def _on_stop(self, request: StopEpisode.Request, response: StopEpisode.Response):
        episode = self._take_episode()
        if episode is None:
            with self._lock:
                failure, self._failure = self._failure, ""
            response.success, response.message = False, failure or "no episode is being recorded"
            return response
        duration = ((episode.last_ns - episode.first_ns) * 1e-9) if episode.first_ns is not None else 0.0
        episode.meta.update(
            success=bool(request.task_success),
            notes=bounded(request.notes, MAX_TEXT),
            message_count=episode.count,
            duration=duration,
            stop_time=self.get_clock().now().nanoseconds * 1e-9,
            complete=True,
        )
        try:
            (episode.partial / "episode.json").write_text(json.dumps(episode.meta, indent=2))
            episode.partial.rename(episode.final)  # complete, atomically
        except OSError as error:
            response.success = False
            response.message = (
                f"episode {episode.meta['episode_id']} not saved: {error}; what was written is in {episode.partial}"
            )
            self.get_logger().error(response.message)
            return response
        self.get_logger().info(
            f"episode {episode.meta['episode_id']}: {episode.count} messages, {duration:.1f} s, "
            f"success={request.task_success}"
        )
        response.success, response.message = True, "saved"
        response.episode_id, response.path = episode.meta["episode_id"], str(episode.final)
        response.duration, response.message_count = duration, episode.count
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response):
        episode = self._take_episode()
        if episode is None:
            response.success, response.message = False, "no episode is being recorded"
            return response
        shutil.rmtree(episode.partial, ignore_errors=True)
        response.success, response.message = True, f"discarded {episode.meta['episode_id']}"
        self.get_logger().info(response.message)
        return response

    # -- recording ------------------------------------------------------------------------

    def _take_episode(self) -> _Episode | None:
        """End the episode being recorded, if any: no message is written to it after this."""
        with self._lock:
            episode, self._episode = self._episode, None
        if episode is not None:
            episode.writer.close()
        return episode

    def _write(self, topic: str, data: bytes) -> None:
        with self._lock:
            episode = self._episode
            if episode is None:
                return
            try:
                connection = episode.connections.get(topic)
                if connection is None:
                    connection = episode.writer.add_connection(topic, TOPIC_TYPES[topic], typestore=self.typestore)
                    episode.connections[topic] = connection
                stamp = self.get_clock().now().nanoseconds
                episode.writer.write(connection, stamp, bytes(data))
            except OSError as error:
                self._episode = None
                failed = error
            else:
                episode.count += 1
                episode.first_ns = stamp if episode.first_ns is None else episode.first_ns
                episode.last_ns = stamp
                return
        self._end_on_write_error(episode, failed)

    def _end_on_write_error(self, episode: _Episode, error: OSError) -> None:
        """Keep what the bag holds under the episode's name, flagged incomplete; say so."""
        # Its summary may not fit either (the converter reads up to the damage); whatever the
        # writer raises on a full disk, the node goes on.
        with contextlib.suppress(Exception):
            episode.writer.close()
        episode.meta.update(success=False, complete=False, message_count=episode.count, error=bounded(str(error)))
        path = episode.partial
        try:
            (episode.partial / "episode.json").write_text(json.dumps(episode.meta, indent=2))
            episode.partial.rename(episode.final)
            path = episode.final
        except OSError:
            pass  # episode.json from the start says complete: false
        failure = (
            f"episode {episode.meta['episode_id']} ended after {episode.count} messages: write failed "
            f"({bounded(str(error))}); what was written is in {path}"
        )
        with self._lock:
            self._failure = failure
        self.get_logger().error(failure)
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        with self._lock:
            failure, episode = self._failure, self._episode
        if failure:
            level, message = ERROR, failure
        else:
            level, message = OK, f"recording {episode.meta['episode_id']}" if episode else "idle"
        values = {"messages": episode.count if episode else 0}
        self.diagnostics.publish(diagnostic_array(self, "rotvla/episode_recorder", level, message, values))

    def destroy_node(self):
        episode = self._take_episode()
        if episode is not None:  # an episode never stopped is not complete: it stays .partial
            self.get_logger().warning(f"episode {episode.meta['episode_id']} left incomplete in {episode.partial}")
        return super().destroy_node()


def main(args=None):
    run_node(EpisodeRecorder, args, num_threads=2)


if __name__ == "__main__":
    main()
