"""Reading LeRobotDataset v3.0 directories for training: ours (``convert``) and other
people's. ROS-free; torch only through ``torch.utils.data.Dataset``.

An item is one frame: its camera images (uint8 RGB), its state, the chunk of the next
``action_horizon`` actions of the same episode (the last action repeated past the end, with
a mask saying which steps are real), a clip of ``clip_length`` frames ``clip_stride`` apart
from the ``clip_camera`` starting at this one (the latent action model's triplets and plan
frames), and the task's text. With ``image_size`` (and ``clip_image_size`` for the clip), frames are passed
through the contract's ``prepare_image`` as they are decoded: what a training run sees is
what the deployed policy sees.

Video frames are decoded on demand (``video.VideoFrames``: seek to the keyframe before the
frame, decode forward) into a cache of at most ``video_cache_mb`` per process: a small
fine-tuning set ends up decoded once and served from memory, a large one costs a seek and a
couple of decodes per frame, and memory never grows with the dataset. DataLoader workers
each open their own files.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import Dataset

from rotvla_common.action_space import CAMERA_NAMES
from rotvla_common.contract import CONTROL_SOURCES, POLICY, prepare_image
from rotvla_common.text import read_json_object

from .features import ACTION_KEY, INDEX_COLUMNS, INTERVENTION_KEY, SOURCE_KEY, STATE_KEY
from .video import VideoFrames


class DatasetFormatError(ValueError):
    pass


def _read_tables(folder: Path):
    """Every parquet file under ``folder`` as one table. Files written by different tools
    (ours, LeRobot appending an episode) may order their columns differently, hold columns
    the others lack (ours: source, success, operator) or type a vector as a fixed or variable
    list: columns are matched by name, widened to a common type, missing values null."""
    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetFormatError(f"no parquet files under {folder}")
    try:
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DatasetFormatError(f"{folder}: the parquet files do not share their columns' types: {error}") from None


def read_info(root: Path) -> dict:
    """meta/info.json of a LeRobot v3.0 dataset; DatasetFormatError if it is none."""
    info_path = Path(root) / "meta" / "info.json"
    if not info_path.exists():
        raise DatasetFormatError(f"{root} is no LeRobot dataset (no meta/info.json)")
    info = read_json_object(info_path, DatasetFormatError)
    for key, kinds in (("codebase_version", str), ("fps", (int, float)), ("features", dict)):
        if not isinstance(info.get(key), kinds) or isinstance(info.get(key), bool):
            raise DatasetFormatError(f"{info_path}: {key} is missing or not a {getattr(kinds, '__name__', 'number')}")
    # A frame period outside [1 ms, 10 s] is no recording (fps 0 divided by zero, 1e9 made dt 1e-9 s).
    if not 0.1 <= info["fps"] <= 1000:
        raise DatasetFormatError(f"{info_path}: fps {info['fps']} outside [0.1, 1000]")
    if not str(info.get("codebase_version", "")).startswith("v3"):
        raise DatasetFormatError(
            f"{root}: LeRobot {info.get('codebase_version')} (v3.0 needed: "
            "convert older datasets with LeRobot's own converter)"
        )
    if not all(isinstance(v, dict) for v in info["features"].values()):
        raise DatasetFormatError(f"{info_path}: a feature is not a mapping")
    images = [k for k, v in info["features"].items() if v.get("dtype") in ("video", "image")]
    if any(info["features"][k]["dtype"] == "image" for k in images):
        raise DatasetFormatError(f"{root}: image features stored in parquet are not supported (videos are)")
    return info


def camera_names(info: dict) -> list[str]:
    """The dataset's cameras: its video features' names without ``observation.images.``."""
    return [k.removeprefix("observation.images.") for k, v in info["features"].items() if v.get("dtype") == "video"]


def feature_names(info: dict, key: str) -> tuple[str, ...]:
    """The names of a vector feature (``action``, ``observation.state``); () where it is absent."""
    return tuple(info["features"].get(key, {}).get("names") or [])


class LeRobotV3Dataset(Dataset):
    def __init__(
        self,
        root: str | Path,
        action_horizon: int = 1,
        cameras: list[str] | None = None,
        clip_length: int = 0,
        clip_stride: int = 1,
        clip_camera: str = CAMERA_NAMES[0],
        video_cache_mb: float = 1024,
        image_size: int = 0,
        clip_image_size: int = 0,
    ):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.fps = float(self.info["fps"])
        features = self.info["features"]
        available = camera_names(self.info)
        self.cameras = available if cameras is None else list(cameras)  # [] : the clip's camera alone
        missing = sorted(set(self.cameras) - set(available))
        if missing:
            raise DatasetFormatError(f"{self.root}: no cameras {missing} (has {available})")
        # Action-free video (human demonstrations, Stage I) has neither: empty names, (N, 0) arrays.
        self.action_names = feature_names(self.info, ACTION_KEY)
        self.state_names = feature_names(self.info, STATE_KEY)
        self.action_horizon = action_horizon
        self.clip_length, self.clip_stride, self.clip_camera = clip_length, clip_stride, clip_camera
        self.image_size, self.clip_image_size = image_size, clip_image_size
        if clip_length and clip_camera not in available:
            raise DatasetFormatError(f"{self.root}: no camera {clip_camera!r} for clips (has {available})")

        data = _read_tables(self.root / "data")
        for name in INDEX_COLUMNS:
            if name not in data.column_names or not pa.types.is_integer(data.schema.field(name).type):
                found = data.schema.field(name).type if name in data.column_names else "missing"
                raise DatasetFormatError(f"{self.root}/data: column {name} must hold integers ({found})")
        self.state, self.action = (
            np.asarray(data.column(key).to_pylist(), dtype=np.float32).reshape(data.num_rows, -1)
            if key in features
            else np.zeros((data.num_rows, 0), dtype=np.float32)
            for key in (STATE_KEY, ACTION_KEY)
        )  # (N, S), (N, A)
        # Who drove each frame (the converter's; absent from other tools' files: not an intervention).
        self.intervention = (
            np.array([bool(v) for v in data.column(INTERVENTION_KEY).to_pylist()])
            if INTERVENTION_KEY in data.column_names
            else np.zeros(data.num_rows, dtype=bool)
        )  # (N,)
        self.policy_driven = (
            np.asarray(data.column(SOURCE_KEY).to_pylist()) == CONTROL_SOURCES.index(POLICY)
            if SOURCE_KEY in data.column_names
            else np.zeros(data.num_rows, dtype=bool)
        )  # (N,)
        self.episode_index = np.asarray(data.column("episode_index").to_pylist())
        self.frame_index = np.asarray(data.column("frame_index").to_pylist())
        self.task_index = np.asarray(data.column("task_index").to_pylist())
        order = np.argsort(np.asarray(data.column("index").to_pylist()), kind="stable")
        for name in ("state", "action", "intervention", "policy_driven", "episode_index", "frame_index", "task_index"):
            setattr(self, name, getattr(self, name)[order])
        tasks = pq.read_table(self.root / "meta" / "tasks.parquet")
        task_column = "task" if "task" in tasks.column_names else "__index_level_0__"
        self.tasks = dict(zip(tasks.column("task_index").to_pylist(), tasks.column(task_column).to_pylist()))
        episodes = _read_tables(self.root / "meta" / "episodes").to_pylist()
        self.episodes = {row["episode_index"]: row for row in episodes}
        self._videos: dict[tuple[Path, int], VideoFrames] = {}
        self.set_video_cache(video_cache_mb)

    def set_video_cache(self, megabytes: float) -> None:
        """The budget of decoded frames kept in memory (before any frame is read), shared
        evenly by the video files, counted in frames of the size they are kept at."""
        features = self.info["features"]
        files = {
            (key, row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"])
            for row in self.episodes.values()
            for key in (f"observation.images.{c}" for c in self._decoded_cameras())
        }
        if self.image_size and (self.clip_image_size or not self.clip_length):
            frame_bytes = 3 * max(self.image_size, self.clip_image_size) ** 2
        else:
            frame_bytes = max(
                int(np.prod(features[f"observation.images.{c}"].get("shape", [224, 224, 3])))
                for c in self._decoded_cameras()
            )
        self._cache_frames = max(8, int(megabytes * 2**20 / frame_bytes / max(len(files), 1)))

    def __len__(self) -> int:
        return len(self.state)

    def _reads(self) -> list[tuple[str, int]]:
        """(camera, size) of every stream an item decodes: the views, and the clip's camera."""
        reads = {(c, self.image_size) for c in self.cameras}
        if self.clip_length:
            reads.add((self.clip_camera, self.clip_image_size))
        return sorted(reads)

    def _decoded_cameras(self) -> list[str]:
        return sorted({camera for camera, _ in self._reads()})

    def stats(self) -> dict:
        path = self.root / "meta" / "stats.json"
        return read_json_object(path, DatasetFormatError) if path.exists() else {}

    def _video(self, camera: str, episode: dict, size: int) -> VideoFrames:
        key = f"observation.images.{camera}"
        path = self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=episode[f"videos/{key}/chunk_index"],
            file_index=episode[f"videos/{key}/file_index"],
        )
        if (path, size) not in self._videos:
            transform = partial(prepare_image, size=size) if size else None
            self._videos[path, size] = VideoFrames(path, cache_frames=self._cache_frames, transform=transform)
        return self._videos[path, size]

    def preload(self) -> bool:
        """Decode every video of the cameras read, in order, into the cache if they all fit
        (see ``VideoFrames.preload``); True when they did."""
        videos = {
            id(v): v for c, size in self._reads() for e in self.episodes.values() for v in [self._video(c, e, size)]
        }
        return all([video.preload() for video in videos.values()])

    def frame(self, camera: str, row: int, size: int = 0) -> np.ndarray:
        """(H, W, 3) uint8, or (size, size, 3) through ``prepare_image``."""
        key = f"observation.images.{camera}"
        episode = self.episodes[int(self.episode_index[row])]
        video = self._video(camera, episode, size)
        position = int(round((episode[f"videos/{key}/from_timestamp"] + self.frame_index[row] / self.fps) * self.fps))
        return video[min(position, len(video) - 1)]

    def episode_rows(self, episode: int) -> range:
        row = self.episodes[episode]
        return range(int(row["dataset_from_index"]), int(row["dataset_to_index"]))

    def same_episode(self, row: int, offset: int) -> int:
        """The row ``offset`` frames later in the same episode (clamped to its last frame)."""
        episode = self.episodes[int(self.episode_index[row])]
        return min(row + offset, int(episode["dataset_to_index"]) - 1)

    def __getitem__(self, row: int) -> dict:
        rows = [self.same_episode(row, k) for k in range(self.action_horizon)]
        end = int(self.episodes[int(self.episode_index[row])]["dataset_to_index"])
        item = {
            "images": {c: self.frame(c, row, self.image_size) for c in self.cameras},  # (H, W, 3) uint8
            "state": self.state[row],
            "actions": self.action[rows],  # (H, A)
            "action_mask": np.array([row + k < end for k in range(self.action_horizon)]),
            "instruction": self.tasks[int(self.task_index[row])],
            "index": row,
            "episode_index": int(self.episode_index[row]),
            "frame_index": int(self.frame_index[row]),
        }
        if self.clip_length:
            rows = [self.same_episode(row, k * self.clip_stride) for k in range(self.clip_length)]
            item["clip"] = np.stack(
                [self.frame(self.clip_camera, r, self.clip_image_size) for r in rows]
            )  # (L, H, W, 3)
        return item
