"""Results of evaluation episodes: the success rate with its 95% Wilson interval, the time to
success, per-episode records as JSON, and videos of chosen episodes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from rotvla_common.text import read_json


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    time_to_success: float | None  # s of sim time from the start of the episode
    duration: float  # s of sim time the episode ran
    chunks: int = 0  # chunks the policy made
    rejected_chunks: int = 0  # refused by the executor's controller
    limit_events: int = 0  # control cycles the safety filter changed
    wall_seconds: float = 0.0
    notes: dict = field(default_factory=dict)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (scipy's)."""
    if trials == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass
class Summary:
    task: str
    checkpoint: str
    mode: str  # in-process or ros
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_time_to_success: float | None
    results: list[EpisodeResult]
    settings: dict = field(default_factory=dict)

    @classmethod
    def of(cls, task: str, checkpoint: str, mode: str, results: list[EpisodeResult], settings: dict | None = None):
        successes = sum(r.success for r in results)
        times = [r.time_to_success for r in results if r.success]
        return cls(
            task,
            checkpoint,
            mode,
            len(results),
            successes,
            successes / max(1, len(results)),
            wilson_interval(successes, len(results)),
            float(np.mean(times)) if times else None,
            results,
            settings or {},
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> Summary:
        data = read_json(path)
        data["results"] = [EpisodeResult(**r) for r in data["results"]]
        data["ci95"] = tuple(data["ci95"])
        return cls(**data)

    def line(self) -> str:
        low, high = self.ci95
        mean = f"{self.mean_time_to_success:.1f} s" if self.mean_time_to_success is not None else "-"
        split = self.settings.get("split")
        shift = self.settings.get("shift", "none")
        where = "".join([f", {split} seeds" if split else "", f", shift {shift}" if shift != "none" else ""])
        return (
            f"{self.task} [{self.mode}{where}] {self.checkpoint}: "
            f"{self.successes}/{self.episodes} = {100 * self.success_rate:.0f}% "
            f"(95% CI {100 * low:.0f}-{100 * high:.0f}%), mean time to success {mean}"
        )


class VideoRecorder:
    """Frames (H, W, 3) uint8 -> an H.264 mp4 (PyAV)."""

    def __init__(self, path: Path, fps: float):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import av

        if self.frames == 0:
            # Even sizes for yuv420p.
            self.stream.height, self.stream.width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(rgb[: self.stream.height, : self.stream.width]), format="rgb24"
        )
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
