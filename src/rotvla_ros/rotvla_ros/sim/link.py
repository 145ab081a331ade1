"""The simulated arm's command link: the latency between a controller's command and the arm
acting on it, fixed like a field bus's rather than whatever the cell's own topics add."""

from __future__ import annotations

from collections import deque

import numpy as np


class CommandLink:
    """One arm's commands in flight. A command takes effect ``delay`` after its stamp (the
    controller cycle that computed it), or when it arrives if that is later: over a link whose
    latency is longer than the cell's own topic round trip (a few ms of sim time, tens on a
    loaded machine), the arm's latency is the link's alone and the same from run to run."""

    def __init__(self):
        self._pending: deque[tuple[float, float, np.ndarray]] = deque()  # (arrived, stamp, command), oldest first

    def receive(self, now: float, stamp: float, command: np.ndarray) -> float | None:
        """The newest command as read at ``now``: queued if it is new (its stamp differs from
        the last one's). Returns its age on arrival (now - stamp, s), None if not new."""
        if self._pending and self._pending[-1][1] == stamp:
            return None
        self._pending.append((now, stamp, command))
        return now - stamp

    def in_force(self, now: float, delay: float) -> np.ndarray | None:
        """The newest command that has taken effect by ``now``; None before the first."""
        now += 1e-9  # a command due exactly now is in force

        def effective(entry: tuple[float, float, np.ndarray]) -> float:
            arrived, stamp, _ = entry
            return max(arrived, stamp + delay)

        pending = self._pending
        while len(pending) > 1 and effective(pending[1]) <= now:
            pending.popleft()
        return pending[0][2] if pending and effective(pending[0]) <= now else None

    def clear(self) -> None:
        self._pending.clear()
