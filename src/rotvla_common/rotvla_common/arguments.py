"""argparse types for the command lines: a value out of range is a usage error that names the
option (argparse prefixes the message with it), never a traceback or a run that means nothing
(``--episodes 0``, a period of nan, a latency of 1e9 s)."""

from __future__ import annotations

import argparse
import math
import os


def integer(low: int | None = None, high: int | None = None):
    """An int in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is outside [{low}, {high}]")
        return value

    return parse


def number(low: float, high: float, *, low_inclusive: bool = False):
    """A finite float in (low, high] (or [low, high])."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value >= low if low_inclusive else value > low
        if not math.isfinite(value) or not above or value > high:
            bracket = "[" if low_inclusive else "("
            raise argparse.ArgumentTypeError(f"{value} is outside {bracket}{low:g}, {high:g}]")
        return value

    return parse


def existing_file(text: str) -> str:
    """The absolute path of a file that exists."""
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text!r} is no file")
    return path
