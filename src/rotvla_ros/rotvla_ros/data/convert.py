"""rosbag2 episodes (MCAP or sqlite3) -> a LeRobotDataset v3.0 directory. ROS-free (rosbags).

    rotvla_convert demos/2026* --output datasets/block_to_plate [--fps 10] [--overwrite]
    rotvla_convert demos/2026* --check       (which episodes would convert, and why not)

Per episode (one bag, with the recorder's ``episode.json`` when there is one):

- Every stream is keyed by its messages' **header stamps** (capture time), not by the time
  the bag logged them. A stream with no message, stamps that go backwards, or a gap longer
  than ``max_gap`` fails the conversion with an error naming the episode and the topic.
- The episode's timeline runs at ``fps`` over the span every stream covers; each frame
  takes, per stream, the message nearest its time.
- ``observation.state``: both arms' EEF poses in the paper's 20-D layout (xyz, Rotate6D,
  gripper opening; left arm first; ``rotvla_common.contract.eef_state``), from
  ``/rotvla/eef_pose/<arm>`` and the grippers in ``/joint_states``. ``action``: the state of
  the next frame (absolute EEF targets), the last frame holding its own: the contract's
  alignment, under which the executor schedules a chunk's step ``i`` at ``stamp + (i + 1) dt``.
  ``action_label``: ``measured`` (that state as the arms reached it, the default) or
  ``intended``: the pose the operator meant at the next frame (the forward kinematics of
  ``/rotvla/teleop/intended_joint_targets``), the gripper as measured: the label of perturbed
  demonstrations, whose executed motion carries noise the policy must not learn.
- Who drove each frame, from ``/rotvla/executor_status`` (its ``control_source`` at the
  frame's time): ``action_source`` (an index into ``rotvla_common.contract.CONTROL_SOURCES``)
  and ``intervention`` (the operator drove this frame, in an episode the policy also drove at
  some moment: the corrections of a takeover). A bag without the executor's status, or with statuses from
  before they said who drives, was teleoperated throughout: a demonstration.
- Frames before the robot first moves (an operator getting ready) are left out, but the last
  one: a demonstration then starts with the motion it teaches, not with a pause whose end no
  observation can predict (``idle_motion``, 0 keeps them).
- ``observation.images.<camera>``: one mp4 per camera for the whole dataset (PyAV), episodes
  one after the other, located by ``videos/<key>/from_timestamp`` in the episodes table.

The dataset is written into a temporary directory beside ``output`` and renamed at the end:
a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rotvla_common import topics
from rotvla_common.action_space import (
    ARM_ACTION_FIELDS,
    CAMERA_NAMES,
    DUAL_ARM_EEF_ACTION_NAMES,
    GRIPPER_FIELD,
    POSITION_FIELDS,
)
from rotvla_common.contract import (
    CONTROL_SOURCES,
    DEFAULT_FPS,
    POLICY,
    TELEOP,
    eef_state,
    next_state_actions,
    quaternion_to_matrix,
)
from rotvla_common.text import read_json_object

from ..ingest.images import ImageFormatError, image_to_rgb
from .features import ACTION_KEY, INTERVENTION_KEY, SOURCE_KEY, STATE_KEY
from .rosbag_types import make_typestore

CODEBASE_VERSION = "v3.0"


ACTION_LABELS = ("measured", "intended")


class ConversionError(RuntimeError):
    """A bag that cannot become a clean episode; the message names the episode and topic."""


# One arm's slice of the state and action vectors (rotvla_common.action_space).
ARM_WIDTH = len(ARM_ACTION_FIELDS)
GRIPPER = ARM_ACTION_FIELDS.index(GRIPPER_FIELD)


@dataclass
class ConversionConfig:
    fps: int = DEFAULT_FPS
    cameras: tuple[str, ...] = CAMERA_NAMES
    arms: tuple[str, ...] = ("left", "right")
    camera_topic: str = topics.absolute(topics.CAMERAS) + "/{camera}/color/image_raw"
    eef_topic: str = topics.absolute(topics.EEF_POSE) + "/{arm}"
    joint_state_topic: str = topics.absolute(topics.JOINT_STATES)
    status_topic: str = topics.absolute(topics.EXECUTOR_STATUS)  # who drove (optional)
    intended_topic: str = topics.absolute(topics.TELEOP_INTENDED)
    action_label: str = "measured"  # or "intended" (ACTION_LABELS)
    max_gap: float = 0.25  # s between consecutive messages of a stream
    codec: str = "libx264"  # libsvtav1 is LeRobot's default; x264 encodes faster on a CPU
    gop: int = 2  # frames between keyframes (LeRobot's default): any frame decodes from at most one before it
    robot_type: str = "arx_r5_dual"
    idle_motion: float = 0.002  # m (and m of gripper opening): less is "not moving yet" at the start
    skip_invalid: bool = False  # leave out (and report) an episode that cannot be converted, instead of failing
    task: str = ""  # the instruction when a bag has no episode.json

    def __post_init__(self):
        if self.action_label not in ACTION_LABELS:
            raise ValueError(f"action_label must be one of {ACTION_LABELS}, not {self.action_label!r}")


@dataclass
class Episode:
    name: str
    task: str
    timestamps: np.ndarray  # (T,) s from the episode's start
    state: np.ndarray  # (T, 20)
    action: np.ndarray  # (T, 20)
    frames: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    meta: dict = field(default_factory=dict)
    source: np.ndarray | None = None  # (T,) int64, index into CONTROL_SOURCES; None: teleop throughout
    start_time: float = 0.0  # header-stamp time of frame 0, s (the recording's clock)
    # The policy drove at some moment of the recording (also before the first frame kept: a
    # policy that never moved the arms leaves only idle frames, which are left out).
    policy_drove: bool = False

    @property
    def sources(self) -> np.ndarray:
        """(T,) int64: who drove each frame."""
        if self.source is None:
            return np.full(len(self.state), CONTROL_SOURCES.index(TELEOP), dtype=np.int64)
        return self.source

    @property
    def intervention(self) -> np.ndarray:
        """(T,) bool: the operator drove the frame, in an episode the policy drove too."""
        return (self.sources == CONTROL_SOURCES.index(TELEOP)) & self.policy_drove


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _check_stream(name: str, topic: str, stamps: np.ndarray, max_gap: float) -> None:
    if len(stamps) == 0:
        raise ConversionError(f"{name}: no messages on {topic}")
    backwards = np.flatnonzero(np.diff(stamps) < 0)
    if backwards.size:
        raise ConversionError(
            f"{name}: {topic} has out-of-order stamps (message {backwards[0] + 1} is "
            f"{stamps[backwards[0]] - stamps[backwards[0] + 1]:.3f} s before the one before it)"
        )
    gaps = np.diff(stamps)
    if gaps.size and gaps.max() > max_gap:
        at = int(np.argmax(gaps))
        raise ConversionError(
            f"{name}: {topic} has a gap of {gaps[at]:.3f} s (> {max_gap} s) "
            f"{stamps[at] - stamps[0]:.3f} s into the episode"
        )


def _nearest(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the stamp nearest each time."""
    right = np.clip(np.searchsorted(stamps, times), 1, len(stamps) - 1)
    left = right - 1
    return np.where(np.abs(stamps[left] - times) <= np.abs(stamps[right] - times), left, right)


def _episode_meta(path: Path) -> dict:
    """The recorder's episode.json; ConversionError (the episode is left out with
    --skip-invalid) when it is not a JSON object of reasonable size."""
    meta = read_json_object(path, ConversionError)
    for key in ("instruction", "task", "operator"):
        if key in meta and not isinstance(meta[key], str):
            raise ConversionError(f"{path}: {key} is not a string")
    return meta


def _bag_messages(bag_dir: Path, topics: list[str]):
    """(topic, message) of ``topics`` in a rosbag2 directory, in time order."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag_dir], default_typestore=make_typestore()) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        for connection, _, raw in reader.messages(connections=connections):
            yield connection.topic, reader.deserialize(raw, connection.msgtype)


def _damaged_bag_messages(bag_dir: Path, topics: list[str]):
    """(topic, message) of ``topics`` from MCAP files that may end mid-record (no summary, a
    chunk cut short): read in file order up to the last complete record."""
    from mcap.reader import NonSeekingReader

    typestore = make_typestore()
    for path in sorted(bag_dir.glob("*.mcap")):
        with open(path, "rb") as stream:
            records = NonSeekingReader(stream).iter_messages(topics=topics, log_time_order=False)
            while True:
                try:
                    schema, channel, message = next(records)
                except StopIteration:
                    break
                except Exception:  # noqa: BLE001 - the damage: the mcap reader's errors vary
                    break
                yield channel.topic, typestore.deserialize_cdr(message.data, schema.name)


@dataclass
class _Streams:
    """One bag's messages, per stream, in the order read: what ``read_episode`` resamples."""

    stamps: dict[str, list[float]]  # topic -> header stamps
    images: dict[str, list]  # camera -> Image messages
    poses: dict[str, list]  # arm -> (xyz, 3x3 rotation)
    grippers: dict[str, list]  # arm -> opening (nan where a joint state lacks it)
    intended: list[np.ndarray]  # (A, 7) per message: each arm's joints and gripper as meant
    drivers: list[tuple[float, str]]  # (stamp, control source) from the executor's status


def _wanted_topics(config: ConversionConfig) -> list[str]:
    """The streams every episode must have, each checked for gaps."""
    wanted = [config.camera_topic.format(camera=c) for c in config.cameras]
    wanted += [config.eef_topic.format(arm=a) for a in config.arms]
    wanted.append(config.joint_state_topic)
    if config.action_label == "intended":
        wanted.append(config.intended_topic)
    return wanted


def _read_streams(name: str, bag_dir: Path, config: ConversionConfig, incomplete: bool) -> _Streams:
    """The bag's messages of ``_wanted_topics`` and of the executor's status; ``incomplete``:
    read a bag that may end mid-record up to its last complete message."""
    cameras = {config.camera_topic.format(camera=c): c for c in config.cameras}
    eefs = {config.eef_topic.format(arm=a): a for a in config.arms}
    wanted = _wanted_topics(config)
    if config.action_label == "intended":
        from arx_r5_driver.kinematics import joint_names

        intended_names = [joint_names(arm) for arm in config.arms]
    streams = _Streams(
        stamps={t: [] for t in wanted},
        images={c: [] for c in config.cameras},
        poses={a: [] for a in config.arms},
        grippers={a: [] for a in config.arms},
        intended=[],
        drivers=[],
    )
    read = [*wanted, config.status_topic]
    messages = _damaged_bag_messages(bag_dir, read) if incomplete else _bag_messages(bag_dir, read)
    for topic, msg in messages:
        if topic == config.status_topic:
            source = getattr(msg, "control_source", "")
            if source:  # statuses from before they said who drives: nothing to learn
                if source not in CONTROL_SOURCES:
                    raise ConversionError(f"{name}: {topic} names an unknown control source {source[:40]!r}")
                streams.drivers.append((_stamp(msg), source))
            continue
        streams.stamps[topic].append(_stamp(msg))
        if topic in cameras:
            streams.images[cameras[topic]].append(msg)
        elif topic in eefs:
            p, q = msg.pose.position, msg.pose.orientation
            streams.poses[eefs[topic]].append(((p.x, p.y, p.z), quaternion_to_matrix((q.x, q.y, q.z, q.w))))
        elif topic == config.intended_topic:
            index = {n: i for i, n in enumerate(msg.name)}
            if not all(n in index for arm in intended_names for n in arm):
                raise ConversionError(f"{name}: {topic} does not name every joint of {list(config.arms)}")
            streams.intended.append(np.array([[msg.position[index[n]] for n in arm] for arm in intended_names]))
        else:
            index = {n: i for i, n in enumerate(msg.name)}
            for arm in config.arms:
                gripper = f"{arm}_gripper"
                streams.grippers[arm].append(msg.position[index[gripper]] if gripper in index else np.nan)
    return streams


def _timeline(name: str, stamps: dict[str, np.ndarray], config: ConversionConfig) -> np.ndarray:
    """(T,) frame times at ``fps`` over the span every observed stream covers. The label's
    stream (the intended targets, which start when the operator does) does not set it, so that
    both labels of a bag give the same frames."""
    observed = [a for topic, a in stamps.items() if topic != config.intended_topic]
    start = max(a[0] for a in observed)
    end = min(a[-1] for a in observed)
    if end <= start:
        raise ConversionError(f"{name}: the streams do not overlap in time")
    return start + np.arange(int(np.floor((end - start) * config.fps)) + 1) / config.fps  # (T,)


def _resampled_state(
    name: str, streams: _Streams, stamps: dict[str, np.ndarray], times: np.ndarray, config: ConversionConfig
) -> np.ndarray:
    """(T, 20) both arms' EEF state at each frame time (nearest message per stream)."""
    state = []
    joint_index = _nearest(stamps[config.joint_state_topic], times)
    for arm in config.arms:
        pose_index = _nearest(stamps[config.eef_topic.format(arm=arm)], times)
        gripper = np.asarray(streams.grippers[arm])[joint_index]
        if not np.isfinite(gripper).all():
            raise ConversionError(f"{name}: {config.joint_state_topic} has no {arm}_gripper")
        poses = streams.poses[arm]
        state.append(np.stack([eef_state(*poses[i], g) for i, g in zip(pose_index, gripper)]))  # (T, 10)
    return np.concatenate(state, axis=1).astype(np.float32)  # (T, 20)


def _drivers_at(drivers: list[tuple[float, str]], times: np.ndarray) -> np.ndarray | None:
    """(T,) int64 index into CONTROL_SOURCES of the status in force at each frame (the last one
    stamped at or before it); None without statuses (teleoperated throughout)."""
    if not drivers:
        return None
    driver_stamps = np.array([stamp for stamp, _ in drivers])
    order = np.argsort(driver_stamps, kind="stable")
    named = np.array([CONTROL_SOURCES.index(drivers[i][1]) for i in order], dtype=np.int64)
    at = np.clip(np.searchsorted(driver_stamps[order], times, side="right") - 1, 0, len(order) - 1)
    return named[at]  # (T,)


def read_episode(bag: Path, config: ConversionConfig) -> Episode:
    """One bag -> one resampled episode; raises ConversionError."""
    name = bag.name
    meta_file = bag / "episode.json" if (bag / "episode.json").exists() else bag.parent / "episode.json"
    meta = _episode_meta(meta_file) if meta_file.exists() else {}
    task = meta.get("instruction") or meta.get("task") or config.task
    if not task:
        raise ConversionError(f"{name}: no task (no episode.json with an instruction, and no --task)")
    bag_dir = bag / "bag" if (bag / "bag").is_dir() else bag
    # The recorder's own flag: the episode never stopped normally (a write error, a full disk, a
    # crash), and its bag may end mid-record: read up to the last complete message. A damaged bag
    # of an episode that says it is complete (or says nothing) is an error.
    incomplete = meta.get("complete") is False
    try:
        streams = _read_streams(name, bag_dir, config, incomplete)
    except ConversionError:
        raise
    except Exception as error:  # a truncated or corrupt file: rosbags' own errors vary
        raise ConversionError(f"{name}: cannot read the bag ({type(error).__name__}: {error})") from error
    if incomplete:
        why = meta.get("error", "the recording did not finish")
        print(f"rotvla_convert: {name}: incomplete ({why}): read up to its last complete message", flush=True)
    stamps = {t: np.asarray(s) for t, s in streams.stamps.items()}
    for topic, topic_stamps in stamps.items():
        _check_stream(name, topic, topic_stamps, config.max_gap)
    times = _timeline(name, stamps, config)
    state = _resampled_state(name, streams, stamps, times, config)
    first = first_motion(state, config.idle_motion, len(config.arms))
    times, state = times[first:], state[first:]
    intended = None
    if config.action_label == "intended":
        intended = _intended_actions(stamps[config.intended_topic], np.array(streams.intended), times)
    action = demonstration_actions(state, intended, config)
    frames = {}
    for camera in config.cameras:
        topic = config.camera_topic.format(camera=camera)
        messages = streams.images[camera]
        try:
            frames[camera] = np.stack([image_to_rgb(messages[i]) for i in _nearest(stamps[topic], times)])
        except ImageFormatError as error:
            raise ConversionError(f"{name}: {topic}: {error}") from error
    return Episode(
        name,
        task,
        (times - times[0]).astype(np.float32),
        state,
        action,
        frames,
        meta,
        _drivers_at(streams.drivers, times),
        float(times[0]),
        policy_drove=any(driver == POLICY for _, driver in streams.drivers),
    )


def demonstration_actions(state: np.ndarray, intended: np.ndarray | None, config: ConversionConfig) -> np.ndarray:
    """(T, 20) action labels of an episode's kept frames ``state`` (T, 20) under
    ``config.action_label``: the next frame's measured state, or ``intended`` (T, 20), the poses
    meant at the next frame, with the grippers as measured."""
    action = next_state_actions(state)
    if config.action_label == "intended":
        if intended is None or intended.shape != action.shape:
            raise ValueError(f"the intended label needs intended poses of shape {action.shape}")
        # The arms' poses as meant; the grippers as measured, as in every other demonstration:
        # the noise leaves them alone, and labels must agree on what closed is (the intended
        # 0 mm against the measured block's width, pooled, taught a policy to squeeze the block
        # out of its grasp: benchmarks/README.md, the DAgger measurement).
        grippers = [k * ARM_WIDTH + GRIPPER for k in range(len(config.arms))]
        measured_grippers = action[:, grippers]
        action = intended.astype(np.float32)
        action[:, grippers] = measured_grippers
    return action


def intended_poses(intended: np.ndarray) -> np.ndarray:
    """(T, 20) the EEF poses of joint targets ``intended`` (T, A, 7): each arm's joints and
    gripper, in each arm's own frame (where ``eef_state`` is written)."""
    from arx_r5_driver.kinematics import ArmKinematics

    kinematics = ArmKinematics()
    return np.stack(
        [np.concatenate([eef_state(*kinematics.fk(joints[:6]), joints[6]) for joints in frame]) for frame in intended]
    ).astype(np.float32)


def _intended_actions(stamps: np.ndarray, intended: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(T, 20): per frame, the pose the operator meant at the next frame (the last frame: at
    its own), from ``intended`` (M, A, 7) joint targets stamped ``stamps`` (M,)."""
    following = _nearest(stamps, np.r_[times[1:], times[-1]])  # (T,)
    return intended_poses(intended[following])


def first_motion(state: np.ndarray, threshold: float, arms: int) -> int:
    """The frame before the first one whose position or gripper has moved more than
    ``threshold`` from the start (0 when ``threshold`` is 0 or nothing moves)."""
    if threshold <= 0:
        return 0
    per_arm = state.reshape(len(state), arms, ARM_WIDTH)  # (T, A, 10): xyz, Rotate6D, gripper
    xyz = slice(0, len(POSITION_FIELDS))
    moved = np.maximum(
        np.linalg.norm(per_arm[:, :, xyz] - per_arm[0, :, xyz], axis=-1).max(1),
        np.abs(per_arm[:, :, GRIPPER] - per_arm[0, :, GRIPPER]).max(1),
    )
    moving = np.flatnonzero(moved > threshold)
    return max(int(moving[0]) - 1, 0) if moving.size else 0


QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's (pi0.5 normalises by them)
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
QUANTILE_BINS = 5000  # LeRobot's histogram resolution for quantiles


# Statistics follow LeRobot's convention, so that its tools and ours agree on a dataset however
# it was last written: each episode's quantiles come from a histogram of QUANTILE_BINS bins over
# [min, max] (interpolated within the bin), and the dataset's stats.json is the count-weighted
# aggregate of the episodes' statistics (LeRobot recomputes it that way after a merge, a delete
# or an appended episode). Exact quantiles over all frames differed from that by up to 0.07.
def _histogram_quantile(column: np.ndarray, q: float) -> float:
    """The q-quantile of one column from its histogram, LeRobot's way."""
    edges = np.linspace(column.min() - 1e-10, column.max() + 1e-10, QUANTILE_BINS + 1)
    cumulative = np.cumsum(np.histogram(column, bins=edges)[0])
    target = q * len(column)
    k = int(np.searchsorted(cumulative, target))  # the first bin whose cumulative count reaches it
    if k == 0:
        return float(edges[0])
    if k >= len(cumulative):
        return float(edges[-1])
    before, inside = cumulative[k - 1], cumulative[k] - cumulative[k - 1]
    if inside == 0:
        return float(edges[k])
    return float(edges[k] + (target - before) / inside * (edges[k + 1] - edges[k]))


def _feature_stats(values: np.ndarray) -> dict:
    """One episode's statistics of a (N, D) or (N,) feature: min, max, mean, std, count and the
    quantiles (of the mean when N < 2), as LeRobot's compute_episode_stats gives them."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)  # (N, D)
    mean = values.mean(0)
    stats = {"min": values.min(0), "max": values.max(0), "mean": mean, "std": values.std(0)}
    for name, q in QUANTILES.items():
        stats[name] = mean if len(values) < 2 else np.array([_histogram_quantile(c, q) for c in values.T])
    return {**{k: v.tolist() for k, v in stats.items()}, "count": [int(len(values))]}


def aggregate_stats(episodes: list[dict[str, dict]]) -> dict[str, dict]:
    """The dataset's statistics from its episodes', LeRobot's aggregate: min of the minima, max
    of the maxima, count-weighted mean, pooled variance, count-weighted quantiles."""
    aggregated = {}
    for feature in dict.fromkeys(f for stats in episodes for f in stats):  # first-seen order: the same file every run
        parts = [stats[feature] for stats in episodes if feature in stats]
        counts = np.array([p["count"][0] for p in parts], dtype=np.float64)  # (E,)
        total = counts.sum()

        def stack(name, parts=parts, counts=counts):
            values = np.array([p[name] for p in parts], dtype=np.float64)  # (E, ...)
            return values, counts.reshape(-1, *[1] * (values.ndim - 1))

        means, weights = stack("mean")
        mean = (means * weights).sum(0) / total
        stds, _ = stack("std")
        variance = ((stds**2 + (means - mean) ** 2) * weights).sum(0) / total
        result = {
            "min": stack("min")[0].min(0),
            "max": stack("max")[0].max(0),
            "mean": mean,
            "std": np.sqrt(variance),
        }
        for name in QUANTILES:
            values, weights = stack(name)
            result[name] = (values * weights).sum(0) / total
        aggregated[feature] = {**{k: v.tolist() for k, v in result.items()}, "count": [int(total)]}
    return aggregated


def _image_stats(frames: np.ndarray) -> dict:
    """One episode's per-channel statistics over a subsample of its frames (about 20, every 4th
    pixel each way), in [0, 1], shaped (3, 1, 1); the count is the episode's frames."""
    pixels = frames[:: max(1, len(frames) // 20), ::4, ::4].reshape(-1, 3).astype(np.float64) / 255.0
    stats = _feature_stats(pixels)
    return {k: [[[float(x)]] for x in v] for k, v in stats.items() if k != "count"} | {"count": [int(len(frames))]}


def _episode_stats_columns(stats: dict[str, dict]) -> dict:
    """Per-episode statistics as LeRobot's episodes table holds them: ``stats/<feature>/<stat>``."""
    return {f"stats/{feature}/{name}": value for feature, values in stats.items() for name, value in values.items()}


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """LeRobot's meta/tasks.parquet: what ``pd.DataFrame({"task_index": ...}, index=pd.Index(tasks,
    name="task")).to_parquet()`` writes, the pandas metadata naming every column, so that
    pandas reads ``task`` back as the index (LeRobot's load_tasks) without pandas here."""
    table = pa.table(
        {"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks), pa.string())}
    )
    pandas = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas).encode()})


def _stream_codec(path: Path) -> str:
    """The codec of a video file's stream as LeRobot records it (h264, av1; not the encoder)."""
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


class _VideoWriter:
    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str, gop: int):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=fps, options={"g": str(gop)})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def convert(
    bags: list[Path],
    output: Path,
    config: ConversionConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the dataset; returns its info.json. Raises ConversionError (nothing written)."""
    from tqdm import tqdm

    config = config or ConversionConfig()
    if not bags:
        raise ConversionError("no episodes to convert")
    bars = tqdm(bags, desc="episodes", unit="ep", disable=not progress)
    return write_dataset(_readable_episodes(bars, config), output, config, overwrite)


def write_dataset(episodes: Iterable[Episode], output: Path, config: ConversionConfig, overwrite: bool = False) -> dict:
    """``episodes`` -> one LeRobot v3 dataset at ``output``; its info.json. Written into a
    directory beside ``output`` and renamed at the end: a failure leaves nothing behind."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} exists (--overwrite to replace it)")
    staging = output.parent / f".{output.name}.converting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        writer = _DatasetWriter(staging, config)
        for episode in episodes:
            writer.add(episode)
        info = writer.finish()
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
        return info
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class _DatasetWriter:
    """Episodes appended one by one into one LeRobot v3 dataset at ``root``: a video per camera,
    one data table, the episodes table with per-episode statistics; ``finish`` writes the
    tables and the metadata and returns info.json."""

    def __init__(self, root: Path, config: ConversionConfig):
        self.root, self.config = root, config
        self.tasks: dict[str, int] = {}
        self.videos: dict[str, _VideoWriter] = {}
        self.shapes: dict[str, tuple[int, int]] = {}  # camera -> (H, W)
        self.rows: list[dict] = []
        self.episode_rows: list[dict] = []
        self.episode_stats: list[dict] = []
        self.frames = 0  # frames written so far: the next episode's first global index

    def add(self, episode: Episode) -> None:
        episode_index = len(self.episode_rows)
        task_index = self.tasks.setdefault(episode.task, len(self.tasks))
        length = len(episode.timestamps)
        video_row = self._write_videos(episode)
        bookkeeping = {
            "timestamp": episode.timestamps,
            "frame_index": np.arange(length),
            "episode_index": np.full(length, episode_index),
            "index": self.frames + np.arange(length),
            "task_index": np.full(length, task_index),
        }
        stats = {
            STATE_KEY: _feature_stats(episode.state),
            ACTION_KEY: _feature_stats(episode.action),
            SOURCE_KEY: _feature_stats(episode.sources),
            INTERVENTION_KEY: _feature_stats(episode.intervention),
            **{f"observation.images.{c}": _image_stats(f) for c, f in episode.frames.items()},
            **{k: _feature_stats(v) for k, v in bookkeeping.items()},
        }
        sources, intervention = episode.sources, episode.intervention
        for k in range(length):
            self.rows.append(
                {
                    STATE_KEY: episode.state[k].tolist(),
                    ACTION_KEY: episode.action[k].tolist(),
                    "timestamp": float(episode.timestamps[k]),
                    "frame_index": k,
                    "episode_index": episode_index,
                    "index": self.frames + k,
                    "task_index": task_index,
                    # Ours, after LeRobot's columns
                    SOURCE_KEY: int(sources[k]),
                    INTERVENTION_KEY: bool(intervention[k]),
                }
            )
        self.episode_rows.append(
            {
                "episode_index": episode_index,
                "tasks": [episode.task],
                "length": length,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": self.frames,
                "dataset_to_index": self.frames + length,
                **video_row,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                **_episode_stats_columns(stats),
                # Ours, after LeRobot's columns (its writers leave them out: readers must not need them)
                "source": episode.name,
                "success": bool(episode.meta.get("success", True)),
                "operator": str(episode.meta.get("operator", "")),
            }
        )
        self.episode_stats.append(stats)
        self.frames += length

    def _write_videos(self, episode: Episode) -> dict:
        """Append the episode's frames to each camera's video; its columns of the episodes table."""
        config, length = self.config, len(episode.timestamps)
        row = {}
        for camera, frames in episode.frames.items():
            key = f"observation.images.{camera}"
            height, width = frames.shape[1:3]
            if camera not in self.videos:
                self.shapes[camera] = (height, width)
                path = self.root / "videos" / key / "chunk-000" / "file-000.mp4"
                self.videos[camera] = _VideoWriter(path, config.fps, width, height, config.codec, config.gop)
            elif self.shapes[camera] != (height, width):
                raise ConversionError(
                    f"{episode.name}: camera {camera} is {width}x{height}, earlier episodes "
                    f"{self.shapes[camera][1]}x{self.shapes[camera][0]}"
                )
            start = self.videos[camera].frames / config.fps
            for frame in frames:
                self.videos[camera].write(frame)
            row.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start,
                    f"videos/{key}/to_timestamp": start + length / config.fps,
                }
            )
        return row

    def finish(self) -> dict:
        if not self.episode_rows:
            raise ConversionError("no episode could be converted")
        for writer in self.videos.values():
            writer.close()
        root = self.root
        (root / "data" / "chunk-000").mkdir(parents=True)
        data = pa.Table.from_pylist(self.rows, schema=_data_schema())
        pq.write_table(data, root / "data" / "chunk-000" / "file-000.parquet")
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        episodes = pa.Table.from_pylist(self.episode_rows)
        pq.write_table(episodes, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        pq.write_table(_tasks_table(self.tasks), root / "meta" / "tasks.parquet")
        (root / "meta" / "stats.json").write_text(json.dumps(aggregate_stats(self.episode_stats), indent=2))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.config.robot_type,
            "total_episodes": len(self.episode_rows),
            "total_frames": self.frames,
            "total_tasks": len(self.tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": self.config.fps,
            "splits": {"train": f"0:{len(self.episode_rows)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": self._features(),
        }
        (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        return info

    def _features(self) -> dict:
        names = list(DUAL_ARM_EEF_ACTION_NAMES)
        video = "videos/observation.images.{}/chunk-000/file-000.mp4"
        codecs = {c: _stream_codec(self.root / video.format(c)) for c in self.shapes}
        return {
            STATE_KEY: {"dtype": "float32", "shape": [len(names)], "names": names},
            ACTION_KEY: {"dtype": "float32", "shape": [len(names)], "names": names},
            **{
                f"observation.images.{c}": {
                    "dtype": "video",
                    "shape": [h, w, 3],
                    "names": ["height", "width", "channels"],
                    "info": {
                        "video.height": h,
                        "video.width": w,
                        "video.codec": codecs[c],
                        "video.pix_fmt": "yuv420p",
                        "is_depth_map": False,  # LeRobot 0.6's key (0.4 wrote video.is_depth_map)
                        "video.fps": self.config.fps,
                        "video.channels": 3,
                        "has_audio": False,
                    },
                }
                for c, (h, w) in self.shapes.items()
            },
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{
                k: {"dtype": "int64", "shape": [1], "names": None}
                for k in ("frame_index", "episode_index", "index", "task_index")
            },
            SOURCE_KEY: {"dtype": "int64", "shape": [1], "names": None},  # index into CONTROL_SOURCES
            INTERVENTION_KEY: {"dtype": "bool", "shape": [1], "names": None},
        }


def _data_schema() -> pa.Schema:
    vector = pa.list_(pa.float32(), len(DUAL_ARM_EEF_ACTION_NAMES))
    return pa.schema(
        [
            (STATE_KEY, vector),
            (ACTION_KEY, vector),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
            (SOURCE_KEY, pa.int64()),
            (INTERVENTION_KEY, pa.bool_()),
        ]
    )


def _read_each(bags: Iterable[Path], config: ConversionConfig) -> Iterator[tuple[Path, Episode | ConversionError]]:
    """Each bag with its episode, or with the reason it does not convert."""
    for bag in bags:
        try:
            yield Path(bag), read_episode(Path(bag), config)
        except ConversionError as error:
            yield Path(bag), error


def _readable_episodes(bags: Iterable[Path], config: ConversionConfig) -> Iterator[Episode]:
    """The episode of every bag that converts (``skip_invalid``: the others are reported)."""
    for _, episode in _read_each(bags, config):
        if isinstance(episode, ConversionError):
            if not config.skip_invalid:
                raise episode
            print(f"rotvla_convert: left out: {episode}", file=sys.stderr, flush=True)
        else:
            yield episode


def check(bags: list[Path], config: ConversionConfig) -> int:
    """Which episodes would convert, one line each, writing nothing; 1 if any would not."""
    invalid = 0
    for bag, episode in _read_each(bags, config):
        if isinstance(episode, ConversionError):
            invalid += 1
            print(f"invalid {bag}: {episode}", flush=True)
        else:
            print(f"ok {bag}", flush=True)
    return 1 if invalid else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "bags", nargs="+", type=Path, help="episode directories (the recorder's) or rosbag2 directories"
    )
    parser.add_argument("--output", type=Path, help="the dataset directory (required unless --check)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing: print 'ok BAG' or 'invalid BAG: reason' per episode (exit 1 if any is invalid)",
    )
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument("--max-gap", type=float, default=0.25)
    parser.add_argument("--task", default="", help="instruction for bags without episode.json")
    parser.add_argument("--codec", default="libx264")
    parser.add_argument(
        "--gop", type=int, default=2, help="frames between keyframes (short: fast random access in training)"
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out (and report) episodes that cannot be converted instead of failing",
    )
    parser.add_argument(
        "--action-label",
        choices=ACTION_LABELS,
        default="measured",
        help="the action: the next frame's measured state, or the pose the operator intended "
        "(perturbed demonstrations: rotvla_record --noise)",
    )
    args = parser.parse_args(argv)
    config = ConversionConfig(
        fps=args.fps,
        max_gap=args.max_gap,
        task=args.task,
        codec=args.codec,
        gop=args.gop,
        skip_invalid=args.skip_invalid,
        action_label=args.action_label,
    )
    if args.check:
        return check(sorted(args.bags), config)
    if args.output is None:
        parser.error("--output is required (or --check)")
    try:
        info = convert(sorted(args.bags), args.output, config, overwrite=args.overwrite)
    except ConversionError as error:
        print(f"rotvla_convert: {error}", file=sys.stderr)
        return 2
    print(f"{args.output}: {info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
