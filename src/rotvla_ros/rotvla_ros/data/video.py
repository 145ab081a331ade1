"""Random access to the frames of a video file with PyAV, without decoding the file into
memory: a frame is reached by seeking to the keyframe before it and decoding forward; the
frames decoded on the way are kept in a small LRU cache, since training reads clips (a frame
and the next few) and nearby frames together. Datasets encoded with a short GOP (ours and
LeRobot's use 2) cost at most a couple of decodes per frame.

Safe in DataLoader workers: the file is (re)opened in the process that reads it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np


class VideoDecodeError(RuntimeError):
    pass


class VideoFrames:
    """``transform``: applied to every decoded frame before it is cached and returned (a
    training run caches frames at the model's input size: many more fit)."""

    def __init__(self, path: str | Path, cache_frames: int = 32, transform=None):
        self.path = Path(path)
        self.cache_frames = cache_frames
        self.transform = transform
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container = None
        self._pid = None
        self._length: int | None = None

    def __getstate__(self):
        # An open container does not cross a process boundary: the reader reopens it.
        return {**self.__dict__, "_container": None, "_pid": None, "_cache": OrderedDict()}

    def _open(self):
        if self._container is None or self._pid != os.getpid():
            import av

            try:
                self._container = av.open(str(self.path))
            except (av.error.FFmpegError, OSError) as error:
                raise VideoDecodeError(f"{self.path}: cannot open ({error})") from error
            self._pid = os.getpid()
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._fps = float(stream.average_rate or stream.guessed_rate)
            self._start = stream.start_time or 0
            self._time_base = stream.time_base
        return self._container

    def __len__(self) -> int:
        if self._length is None:
            stream = self._open().streams.video[0]
            if stream.frames:
                self._length = int(stream.frames)
            else:  # containers without a frame count: count the packets once
                self._length = sum(1 for packet in self._container.demux(stream) if packet.size)
                self._container.seek(0)
        return self._length

    def _index_of(self, frame) -> int:
        return int(round(float((frame.pts - self._start) * self._time_base) * self._fps))

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8 RGB."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: frame {index} of {len(self)}")
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        # From the keyframe before it; from the start when the seek lands after it (a stream
        # without a keyframe index).
        if not self._decode_up_to(index, self._start + int(index / self._fps / self._time_base)):
            self._decode_up_to(index, self._start)
        if index not in self._cache:
            raise VideoDecodeError(f"{self.path}: frame {index} could not be decoded")
        return self._cache[index]

    def _decode_up_to(self, index: int, seek_pts: int) -> bool:
        """Seek to the keyframe at or before ``seek_pts`` and decode up to frame ``index``,
        caching the frames on the way that the cache could still hold; False when the
        first frame decoded is already past ``index``."""
        container = self._open()
        stream = container.streams.video[0]
        container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            found = self._index_of(frame)
            if found > index:  # past it without having seen it
                return False
            if found >= index - self.cache_frames:
                rgb = frame.to_ndarray(format="rgb24")
                self._remember(found, self.transform(rgb) if self.transform is not None else rgb)
            if found >= index:
                break
        return True

    def preload(self) -> bool:
        """Decode the whole file in order into the cache, if it fits (a small fine-tuning set:
        one sequential pass instead of a seek and a couple of decodes per frame); False when it
        does not fit."""
        if len(self) > self.cache_frames:
            return False
        container = self._open()
        stream = container.streams.video[0]
        container.seek(self._start, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            self._remember(self._index_of(frame), self.transform(rgb) if self.transform is not None else rgb)
        return True

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
