"""Helpers shared by the benchmarks: the machine description and one-table printing."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

ROBOT_PARAMETERS = Path(__file__).resolve().parents[1] / "config" / "robot.yaml"


def executor_command(**parameters) -> list[str]:
    """The executor node as deployed (config/robot.yaml), ``parameters`` overriding its values
    (node-qualified: the file's node section outranks a plain -p)."""
    overrides = [arg for name, value in parameters.items() for arg in ("-p", f"arx_r5_executor:{name}:={value}")]
    return [
        sys.executable,
        "-m",
        "arx_r5_driver.executor_node",
        "--ros-args",
        "--params-file",
        str(ROBOT_PARAMETERS),
        *overrides,
    ]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    description = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        import torch

        description += f", torch {torch.__version__}"
        if torch.cuda.is_available():
            description += f", {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return description


def percentiles(samples_s, scale=1e3) -> tuple[float, float, float]:
    """p50, p99, mean of samples in seconds, scaled (ms by default)."""
    a = np.asarray(samples_s) * scale
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def print_table(title: str, header: list[str], rows: list[list], notes: list[str] = ()) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(f"\n## {title}\n\nmachine: {machine()}\n")
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    for note in notes:
        print(f"\n{note}")
