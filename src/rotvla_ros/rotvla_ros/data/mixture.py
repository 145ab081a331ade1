"""Training data from several LeRobot v3 datasets at once, each with a sampling weight: the
paper's pretraining mixture (robot data of this and other embodiments, action-free human
video) or several tasks' demonstrations for one policy. A single dataset is a mixture of one.

A source is a dataset directory, its weight, which of its cameras fills each of the model's
views (by default the camera of the same name; a view it lacks is a blank image masked out of
attention, pi0's way with missing cameras), and whose frames the LAM sees. What a source
gives depends on what it holds: every source gives images and text (Stage I: the LAM's
clips; Stage II: the latent plan from those clips), a source with robot actions in the
model's layout also gives actions (Stage III) and, with the state in that layout, the state
token (masked out elsewhere). ROS-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from rotvla_common.action_space import CAMERA_NAMES

from .lerobot_dataset import DatasetFormatError, LeRobotV3Dataset, camera_names, read_info


@dataclass
class MixtureSource:
    path: str
    weight: float = 1.0  # share of the samples, relative to the other sources'
    cameras: dict[str, str] = field(default_factory=dict)  # model view -> this dataset's camera
    latent_camera: str = ""  # whose frames the LAM sees; "": the run's latent_camera

    def __post_init__(self):
        self.cameras = dict(self.cameras or {})  # YAML's null as none
        # Finite and within a millionfold of 1: inf drew nothing else, 1e-300 never drew it.
        if not (isinstance(self.weight, (int, float)) and 1e-6 <= self.weight <= 1e6):
            raise ValueError(f"{self.path}: weight must be a number in [1e-6, 1e6], not {self.weight}")

    @classmethod
    def parse(cls, value: str | dict | MixtureSource) -> MixtureSource:
        """A path, or a mapping of this class's fields (the training YAML's form)."""
        if isinstance(value, MixtureSource):
            return value
        if isinstance(value, (str, Path)):
            return cls(str(value))
        if not isinstance(value, dict) or "path" not in value:
            raise ValueError(f"a dataset is a path or a mapping with a path, not {value!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"dataset {value['path']}: unknown settings {unknown} (known: {sorted(known)})")
        return cls(**{**value, "path": str(value["path"])})


def parse_sources(value) -> list[MixtureSource]:
    """The training config's ``dataset``: one path, or a list of paths and mappings."""
    items = value if isinstance(value, (list, tuple)) else [value]
    sources = [MixtureSource.parse(item) for item in items if item]
    if not sources:
        raise ValueError("no dataset given")
    return sources


class DatasetMixture(Dataset):
    """The sources' frames end to end: global index ``offsets[d] + row`` is row ``row`` of
    source ``d``. Items are ``LeRobotV3Dataset``'s with ``images`` keyed by the model's views
    (the views a source lacks left out), plus ``source`` (d), ``has_actions`` and
    ``has_state``; ``index`` stays the row within the source."""

    def __init__(
        self,
        sources: list[MixtureSource],
        views: tuple[str, ...] = (),
        action_names: tuple[str, ...] = (),
        latent_camera: str = CAMERA_NAMES[0],
        action_horizon: int = 1,
        clip_length: int = 0,
        clip_stride: int = 1,
        image_size: int = 0,
        clip_image_size: int = 0,
        video_cache_mb: float = 1024,
    ):
        self.sources, self.views = list(sources), tuple(views)
        self.view_cameras: list[dict[str, str]] = []  # per source: model view -> its camera
        self.latent_cameras: list[str] = []
        self.parts: list[LeRobotV3Dataset] = []
        for source in self.sources:
            available = camera_names(read_info(Path(source.path)))
            mapping = self._view_cameras(source, available)
            latent = source.latent_camera or latent_camera
            if clip_length and latent not in available:
                raise DatasetFormatError(
                    f"{source.path}: no camera {latent!r} for the latent action model's clips (has {available}; "
                    "give the source its own latent_camera)"
                )
            self.view_cameras.append(mapping)
            self.latent_cameras.append(latent)
            self.parts.append(
                LeRobotV3Dataset(
                    source.path,
                    action_horizon=action_horizon,
                    cameras=sorted(set(mapping.values())),
                    clip_length=clip_length,
                    clip_stride=clip_stride,
                    clip_camera=latent,
                    image_size=image_size,
                    clip_image_size=clip_image_size,
                )
            )
        # The decoded-frame budget in proportion to each source's frames: an even share leaves
        # the largest source undecodable in memory while a small one has room to spare.
        frames = sum(len(p) for p in self.parts)
        for part in self.parts:
            part.set_video_cache(video_cache_mb * len(part) / max(frames, 1))
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.action_names = tuple(action_names)
        self.has_actions = [bool(action_names) and p.action_names == self.action_names for p in self.parts]
        self.has_state = [bool(action_names) and p.state_names == self.action_names for p in self.parts]

    def _view_cameras(self, source: MixtureSource, available: list[str]) -> dict[str, str]:
        if not self.views:  # Stage I: the LAM's clips alone
            return {}
        unknown_views = sorted(set(source.cameras) - set(self.views))
        if unknown_views:
            raise ValueError(
                f"{source.path}: cameras maps {unknown_views}, which are no views of the model {self.views}"
            )
        missing = sorted(c for c in source.cameras.values() if c not in available)
        if missing:
            raise DatasetFormatError(f"{source.path}: no cameras {missing} (has {available})")
        mapping = {v: source.cameras.get(v, v) for v in self.views}
        mapping = {v: c for v, c in mapping.items() if c in available}
        if not mapping:
            raise DatasetFormatError(
                f"{source.path}: none of its cameras {available} is a view of the model {self.views}; "
                "map one, e.g. cameras: {" + f"{self.views[0]}: {available[0] if available else '?'}" + "}"
            )
        return mapping

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(source, row within it) of a global index."""
        source = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return source, int(index - self.offsets[source])

    def __getitem__(self, index: int) -> dict:
        source, row = self.locate(index)
        item = self.parts[source][row]
        item["images"] = {v: item["images"][c] for v, c in self.view_cameras[source].items()}  # (S, S, 3) uint8 each
        item.update(source=source, has_actions=self.has_actions[source], has_state=self.has_state[source])
        return item

    def preload(self) -> bool:
        return all([p.preload() for p in self.parts])

    def describe(self, latent: bool) -> list[str]:
        """One line per source: what it gives a run."""
        total = sum(s.weight for s in self.sources)
        lines = []
        for d, (source, part) in enumerate(zip(self.sources, self.parts)):
            views = ", ".join(f"{v}<-{c}" if v != c else v for v, c in self.view_cameras[d].items()) or "-"
            blank = [v for v in self.views if v not in self.view_cameras[d]]
            gives = "actions" if self.has_actions[d] else "no actions (images and latents only)"
            lines.append(
                f"{source.path}: {len(part)} frames, {len(part.episodes)} episodes, {part.fps:g} fps, "
                f"weight {source.weight / total:.2f}, views {views}"
                + (f" (blank: {', '.join(blank)})" if blank else "")
                + (f", LAM camera {self.latent_cameras[d]}" if latent else "")
                + f", {gives}"
                + (", state" if self.has_state[d] else "")
            )
        return lines
