"""sensor_msgs/Image <-> numpy without cv_bridge (ROS 2's cv_bridge is not on PyPI), and
the crop/resize to the model's input size.

Functions take and fill message objects by their fields (height, width, encoding, step,
data, is_bigendian), so this module imports no ROS package.
"""

from __future__ import annotations

from functools import lru_cache

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
            f"data has {len(msg.data)} bytes, {msg.step * msg.height} expected ({msg.width}x{msg.height}, step {msg.step})"
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


@lru_cache(maxsize=16)
def _bilinear_plan(in_h: int, in_w: int, size: int):
    """Source indices and weights of a centre-crop-to-square + bilinear resize (cached per
    input shape: cameras keep theirs)."""
    side = min(in_h, in_w)
    top, left = (in_h - side) // 2, (in_w - side) // 2
    # Pixel centres of the output mapped into the crop (align_corners=False convention).
    coords = (np.arange(size) + 0.5) * side / size - 0.5
    coords = np.clip(coords, 0, side - 1)
    low = np.floor(coords).astype(np.intp)
    high = np.minimum(low + 1, side - 1)
    frac = (coords - low).astype(np.float32)
    return top + low, top + high, left + low, left + high, frac


def center_crop_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: the central square, resized bilinearly
    (area averaging first when shrinking by 2x or more, against aliasing)."""
    side = min(rgb.shape[:2])
    factor = side // size
    if factor >= 2:  # box-filter by an integer factor, then bilinear for the remainder
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        crop = rgb[top : top + side - side % factor, left : left + side - side % factor]
        small = side // factor
        rgb = crop.reshape(small, factor, small, factor, 3).mean(axis=(1, 3), dtype=np.float32)
    if rgb.shape[:2] == (size, size):
        return np.round(rgb).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    rows0, rows1, cols0, cols1, frac = _bilinear_plan(rgb.shape[0], rgb.shape[1], size)
    # Rows first, then columns: two 1-D interpolations.
    fy = frac[:, None, None]
    rows = rgb[rows0].astype(np.float32) * (1 - fy) + rgb[rows1].astype(np.float32) * fy  # (size, W, 3)
    fx = frac[None, :, None]
    out = rows[:, cols0] * (1 - fx) + rows[:, cols1] * fx  # (size, size, 3)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
