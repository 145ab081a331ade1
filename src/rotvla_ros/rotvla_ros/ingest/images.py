"""sensor_msgs/Image <-> numpy without cv_bridge (ROS 2's cv_bridge is not on PyPI). The
crop/resize to the model's input size is the contract's ``prepare_image``.

Functions take and fill message objects by their fields (height, width, encoding, step,
data, is_bigendian), so this module imports no ROS package.
"""

from __future__ import annotations

import numpy as np

# encoding -> (channels, index of R, G, B in the pixel; None = grey)
ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}


class ImageFormatError(ValueError):
    """An image message that cannot be decoded: unsupported encoding or malformed buffer."""


def check_image(msg) -> None:
    """Raise ``ImageFormatError`` unless ``image_to_rgb`` can decode ``msg`` (cheap: no copy)."""
    if msg.encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {msg.encoding!r} (supported: {sorted(ENCODINGS)})")
    channels = ENCODINGS[msg.encoding][0]
    if msg.height == 0 or msg.width == 0:
        raise ImageFormatError(f"empty image {msg.width}x{msg.height}")
    if msg.step < msg.width * channels:
        raise ImageFormatError(f"step {msg.step} < width {msg.width} x {channels} bytes per pixel")
    if len(msg.data) < msg.step * msg.height:
        raise ImageFormatError(
            f"data has {len(msg.data)} bytes, {msg.step * msg.height} expected "
            f"({msg.width}x{msg.height}, step {msg.step})"
        )


def image_to_rgb(msg) -> np.ndarray:
    """An Image message -> (H, W, 3) uint8 RGB, as a view of the message's buffer for every
    supported encoding (channel order by strides, grey by broadcasting): the crop and resize
    that follow then read only the pixels they need. Copy it to keep it."""
    check_image(msg)
    channels, order = ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    buffer = np.frombuffer(msg.data, dtype=np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    rows = buffer[: step * height].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if order is None:
        return np.broadcast_to(pixels, (height, width, 3))
    if order[0] == 0:
        return pixels[:, :, :3]
    return pixels[:, :, 2::-1]


def fill_image(msg, rgb: np.ndarray, encoding: str = "rgb8"):
    """Write (H, W, 3) uint8 RGB into an Image message in ``encoding``; returns ``msg``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageFormatError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {encoding!r}")
    channels, order = ENCODINGS[encoding]
    if order is None:
        pixels = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[:, :, None]
    else:
        pixels = np.empty(rgb.shape[:2] + (channels,), np.uint8)
        pixels[:, :, list(order)] = rgb
        if channels == 4:
            pixels[:, :, 3] = 255
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = rgb.shape[1] * channels
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg
