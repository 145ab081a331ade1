"""Approximate time synchronisation of several camera streams and the robot's state.

Every frame is kept (a short buffer per camera) with its capture stamp. At each poll the
newest set with one frame per camera whose stamps lie within ``slop`` of each other is
chosen: each buffered frame, newest first, is tried as the pivot, and every other camera
contributes its frame nearest to the pivot. The set's stamp is its oldest capture stamp.

The robot's state streams (``state_sources``: the joint states, each arm's EEF pose) are
kept over the last ``max_age + state_max_offset`` seconds, and each contributes its
message nearest to the set's stamp: the state the images show, as the converter pairs them
in a dataset (``rotvla_ros.data.convert``). The newest state instead would run ahead of the
images by however long the frames took to arrive and be polled.

The set is then refused, and counted by reason, when

- ``skew``: no set of the buffered frames lies within ``slop``;
- ``stale``: its oldest frame is older than ``max_age`` at the time of the poll;
- ``too_soon``: its stamp is less than ``min_interval`` after the last published set's (not
  counted: that is the rate limit at work);
- ``no_state`` / ``state_stale``: a state stream has no message, or none within
  ``state_max_offset`` of the set's stamp (when required);

and never published. A frame or state message stamped more than ``future_tolerance`` ahead of
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
    states: dict[str, Stamped]  # state source -> its message nearest ``stamp``
    skew: float  # newest minus oldest capture stamp, s

    @property
    def joint_state(self) -> Stamped | None:
        return self.states.get(JOINT_STATE)


JOINT_STATE = "joint_state"


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
    DROP_REASONS = ("skew", "stale", "no_state", "state_stale", "future")

    def __init__(
        self,
        cameras: list[str],
        slop: float,
        max_age: float,
        state_max_offset: float,
        require_state: bool = True,
        buffer_size: int = 8,
        future_tolerance: float = 0.1,
        state_sources: tuple[str, ...] = (JOINT_STATE,),
        min_interval: float = 0.0,
    ):
        if not cameras:
            raise ValueError("at least one camera is needed")
        if slop < 0 or max_age <= 0 or state_max_offset <= 0 or min_interval < 0:
            raise ValueError("slop and min_interval must be >= 0, max_age and state_max_offset > 0")
        self.cameras = list(cameras)
        self.state_sources = tuple(state_sources)
        self.slop, self.max_age, self.state_max_offset = slop, max_age, state_max_offset
        self.min_interval = min_interval
        self.require_state = require_state
        self.future_tolerance = future_tolerance
        self._buffer_size = buffer_size
        # A set's stamp is at most max_age old when judged, and its state may lie
        # state_max_offset before it: older state messages can never be chosen.
        self._state_span = max_age + state_max_offset
        self.stats = {c: CameraStats() for c in self.cameras}
        self.drops = dict.fromkeys(self.DROP_REASONS, 0)
        self.future = dict.fromkeys([*self.cameras, *self.state_sources], 0)  # refused as from the future
        self.published = 0
        self.reset()

    def reset(self) -> None:
        """Forget every frame and state (the clock jumped back: they belong to another time)."""
        self._frames = {c: collections.deque(maxlen=self._buffer_size) for c in self.cameras}
        self._states = {s: collections.deque() for s in self.state_sources}
        self.last_skew: float | None = None
        self._last_published_newest = float("-inf")
        self._last_published_stamp = float("-inf")
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

    def add_state(self, source: str, stamp: float, item: Any, now: float | None = None) -> None:
        """A message of one of the ``state_sources`` (joint states, an arm's EEF pose)."""
        if source not in self._states:
            raise KeyError(f"unknown state source {source!r}")
        if self._from_the_future(source, stamp, now):
            return
        messages = self._states[source]
        if messages and stamp <= messages[-1].stamp:
            return  # out of order or repeated: the buffer stays sorted by stamp
        messages.append(Stamped(stamp, item))
        while messages[0].stamp < stamp - self._state_span:
            messages.popleft()

    def ready(self) -> bool:
        """Every camera has a frame newer than the last published set: worth a poll."""
        return all(frames and frames[-1].stamp > self._last_published_newest for frames in self._frames.values())

    def _best_set(self) -> tuple[dict[str, Stamped], float] | None:
        pivots = sorted((f for frames in self._frames.values() for f in frames), key=lambda f: -f.stamp)
        for pivot in pivots:
            chosen = {c: min(frames, key=lambda f: abs(f.stamp - pivot.stamp)) for c, frames in self._frames.items()}
            stamps = [f.stamp for f in chosen.values()]
            skew = max(stamps) - min(stamps)
            if skew <= self.slop:
                return chosen, skew
        return None

    def _states_at(self, stamp: float) -> tuple[dict[str, Stamped], str | None]:
        """Each state source's message nearest ``stamp``, and the reason to refuse, if any."""
        states, problem = {}, None
        for source, messages in self._states.items():
            if not messages:
                problem = problem or "no_state"
                continue
            nearest = min(messages, key=lambda m: abs(m.stamp - stamp))
            if abs(nearest.stamp - stamp) > self.state_max_offset:
                problem = problem or "state_stale"
            states[source] = nearest
        return states, problem

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
        if oldest < self._last_published_stamp + self.min_interval:
            return None  # the rate limit: a later set will do
        if now - oldest > self.max_age:
            drop("stale")
            return None
        states, problem = self._states_at(oldest)
        if problem is not None and self.require_state:
            drop(problem)
            return None
        self._last_published_newest, self._last_published_stamp = set_newest, oldest
        self._judged_state = state
        self.published += 1
        self.last_skew = skew
        return SyncedSet(oldest, frames, states, skew)
