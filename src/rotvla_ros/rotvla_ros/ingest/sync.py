"""Approximate time synchronisation of several camera streams and the robot's joint state.

Every frame is kept (a short buffer per camera) with its capture stamp. At each poll (the
policy rate) the newest set with one frame per camera whose stamps lie within ``slop`` of
each other is chosen: each buffered frame, newest first, is tried as the pivot, and every
other camera contributes its frame nearest to the pivot. The set is then refused, and
counted by reason, when

- ``skew``: no set of the buffered frames lies within ``slop``;
- ``stale``: its oldest frame is older than ``max_age`` at the time of the poll;
- ``no_joint_state`` / ``joint_state_stale``: the joint state is missing or older than
  ``joint_state_max_age`` (when required);

and never published. A frame or joint state stamped more than ``future_tolerance`` ahead of
the clock is refused as it arrives (counted as ``future``): kept, it would stand in front of
every real frame after it. ``reset`` forgets everything (the clock jumped back). A set is
published once: a poll without newer frames returns nothing
and counts nothing. A refusal is counted once every camera has delivered a frame since the
last judgement, so that frames still arriving one camera at a time are not counted as skew
(publishing never waits for that). Stamps are seconds (float) on whatever clock the caller uses (the node's
ROS clock, which is the simulation clock under ``use_sim_time``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stamped:
    stamp: float
    item: Any


@dataclass
class SyncedSet:
    stamp: float  # the earliest capture stamp of the set (the observation's stamp)
    frames: dict[str, Stamped]  # camera -> frame
    joint_state: Stamped | None
    skew: float  # newest minus oldest capture stamp, s


@dataclass
class CameraStats:
    received: int = 0
    arrival_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    last_stamp: float | None = None

    def rate(self) -> float:
        """Frames per second over the recent arrivals (by capture stamp)."""
        if len(self.arrival_times) < 2 or self.arrival_times[-1] <= self.arrival_times[0]:
            return 0.0
        return (len(self.arrival_times) - 1) / (self.arrival_times[-1] - self.arrival_times[0])


class FrameSynchronizer:
    DROP_REASONS = ("skew", "stale", "no_joint_state", "joint_state_stale", "future")

    def __init__(
        self,
        cameras: list[str],
        slop: float,
        max_age: float,
        joint_state_max_age: float,
        require_joint_state: bool = True,
        buffer_size: int = 8,
        future_tolerance: float = 0.1,
    ):
        if not cameras:
            raise ValueError("at least one camera is needed")
        if slop < 0 or max_age <= 0 or joint_state_max_age <= 0:
            raise ValueError("slop must be >= 0, max_age and joint_state_max_age > 0")
        self.cameras = list(cameras)
        self.slop, self.max_age, self.joint_state_max_age = slop, max_age, joint_state_max_age
        self.require_joint_state = require_joint_state
        self.future_tolerance = future_tolerance
        self._buffer_size = buffer_size
        self.stats = {c: CameraStats() for c in self.cameras}
        self.drops = dict.fromkeys(self.DROP_REASONS, 0)
        self.future = dict.fromkeys([*self.cameras, "joint_state"], 0)  # refused as from the future, by source
        self.published = 0
        self.reset()

    def reset(self) -> None:
        """Forget every frame and joint state (the clock jumped back: they belong to another time)."""
        self._frames = {c: collections.deque(maxlen=self._buffer_size) for c in self.cameras}
        self._joint_state: Stamped | None = None
        self.last_skew: float | None = None
        self._last_published_newest = float("-inf")
        self._judged_state: tuple[float, ...] | None = None  # newest stamp per camera when last judged
        for stats in self.stats.values():
            stats.arrival_times.clear()
            stats.last_stamp = None

    def _from_the_future(self, source: str, stamp: float, now: float | None) -> bool:
        if now is not None and stamp > now + self.future_tolerance:
            self.future[source] += 1
            self.drops["future"] += 1
            return True
        return False

    def add_frame(self, camera: str, stamp: float, item: Any, now: float | None = None) -> None:
        if camera not in self._frames:
            raise KeyError(f"unknown camera {camera!r}")
        if self._from_the_future(camera, stamp, now):
            return
        frames = self._frames[camera]
        if frames and stamp <= frames[-1].stamp:
            return  # a repeated or out-of-order frame never replaces a newer one
        frames.append(Stamped(stamp, item))
        stats = self.stats[camera]
        stats.received += 1
        stats.arrival_times.append(stamp)
        stats.last_stamp = stamp

    def add_joint_state(self, stamp: float, item: Any, now: float | None = None) -> None:
        if self._from_the_future("joint_state", stamp, now):
            return
        if self._joint_state is None or stamp >= self._joint_state.stamp:
            self._joint_state = Stamped(stamp, item)

    def _best_set(self) -> tuple[dict[str, Stamped], float] | None:
        pivots = sorted((f for frames in self._frames.values() for f in frames), key=lambda f: -f.stamp)
        for pivot in pivots:
            chosen = {c: min(frames, key=lambda f: abs(f.stamp - pivot.stamp)) for c, frames in self._frames.items()}
            stamps = [f.stamp for f in chosen.values()]
            skew = max(stamps) - min(stamps)
            if skew <= self.slop:
                return chosen, skew
        return None

    def poll(self, now: float) -> SyncedSet | None:
        """The newest synchronised set not yet published, or None (see the module docstring)."""
        if any(not frames for frames in self._frames.values()):
            return None
        state = tuple(frames[-1].stamp for frames in self._frames.values())
        if max(state) <= self._last_published_newest:
            return None
        refreshed = self._judged_state is None or all(s > j for s, j in zip(state, self._judged_state))

        def drop(reason: str) -> None:
            if refreshed:
                self.drops[reason] += 1
                self._judged_state = state

        found = self._best_set()
        if found is None:
            drop("skew")
            return None
        frames, skew = found
        set_newest = max(f.stamp for f in frames.values())
        if set_newest <= self._last_published_newest:
            drop("skew")  # the only in-sync set is one already published: the new frames are not
            return None
        oldest = min(f.stamp for f in frames.values())
        if now - oldest > self.max_age:
            drop("stale")
            return None
        joint_state = self._joint_state
        if self.require_joint_state:
            if joint_state is None:
                drop("no_joint_state")
                return None
            if now - joint_state.stamp > self.joint_state_max_age:
                drop("joint_state_stale")
                return None
        self._last_published_newest = set_newest
        self._judged_state = state
        self.published += 1
        self.last_skew = skew
        return SyncedSet(oldest, frames, joint_state, skew)
