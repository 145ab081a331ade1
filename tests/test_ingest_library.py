"""Camera ingestion library: image conversion, crop/resize, synchronisation (no ROS)."""

from types import SimpleNamespace

import numpy as np
import pytest

from rotvla_common.contract import prepare_image
from rotvla_ros.ingest.images import ImageFormatError, fill_image, image_to_rgb
from rotvla_ros.ingest.sync import JOINT_STATE, FrameSynchronizer


def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(encoding):
    rgb = _rgb()
    msg = fill_image(SimpleNamespace(), rgb, encoding)
    assert msg.step == rgb.shape[1] * (4 if "a" in encoding else 3)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_bgr8_bytes_are_really_blue_green_red():
    msg = SimpleNamespace(height=1, width=1, encoding="bgr8", step=3, data=bytes([10, 20, 30]), is_bigendian=0)
    np.testing.assert_array_equal(image_to_rgb(msg)[0, 0], [30, 20, 10])


def test_mono8_is_replicated_and_row_padding_is_skipped():
    data = bytes([1, 2, 3, 99, 4, 5, 6, 99])  # 3 pixels per row, step 4 (one padding byte)
    msg = SimpleNamespace(height=2, width=3, encoding="mono8", step=4, data=data, is_bigendian=0)
    out = image_to_rgb(msg)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(encoding="16UC1"), "unsupported encoding"),
        (dict(step=2), "step"),
        (dict(data=bytes(10)), "bytes"),
        (dict(height=0), "empty"),
    ],
)
def test_malformed_images_raise_a_clear_error(fields, message):
    msg = SimpleNamespace(height=4, width=4, encoding="rgb8", step=12, data=bytes(48), is_bigendian=0)
    for key, value in fields.items():
        setattr(msg, key, value)
    with pytest.raises(ImageFormatError, match=message):
        image_to_rgb(msg)


def test_prepare_image_keeps_the_centre_and_the_values():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :80] = 255  # left margin outside the central 480x480 square: cropped away
    image[200:280, 280:360] = [10, 200, 30]  # a block at the centre
    out = prepare_image(image, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[:, :5].max() == 0
    np.testing.assert_array_equal(out[112, 112], [10, 200, 30])
    # A uniform image stays uniform; an image already at size is unchanged.
    np.testing.assert_array_equal(prepare_image(np.full((480, 640, 3), 77, np.uint8), 224), 77)
    small = _rgb(224, 224)
    np.testing.assert_array_equal(prepare_image(small, 224), small)


def test_cv_bridge_gives_the_same_arrays_where_it_exists():
    cv_bridge = pytest.importorskip("cv_bridge", reason="ROS 2 cv_bridge is not installable here (not on PyPI)")
    from sensor_msgs.msg import Image

    bridge = cv_bridge.CvBridge()
    for encoding in ("rgb8", "bgr8", "mono8"):
        msg = fill_image(Image(), _rgb(8, 9), encoding)
        np.testing.assert_array_equal(image_to_rgb(msg), bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


CAMERAS = ["head", "left_wrist", "right_wrist"]


def _sync(**kwargs):
    args = dict(slop=0.02, max_age=0.2, state_max_offset=0.1)
    args.update(kwargs)
    return FrameSynchronizer(CAMERAS, **args)


def _feed(sync, stamps):
    for camera, stamp in zip(CAMERAS, stamps):
        sync.add_frame(camera, stamp, f"{camera}@{stamp}")


def test_a_set_within_slop_is_published_once_with_its_stamps():
    sync = _sync()
    sync.add_state(JOINT_STATE, 10.0, "js")
    _feed(sync, [10.000, 10.010, 10.015])
    result = sync.poll(now=10.05)
    assert result is not None
    assert result.stamp == 10.000 and abs(result.skew - 0.015) < 1e-9
    assert {c: f.stamp for c, f in result.frames.items()} == dict(zip(CAMERAS, [10.000, 10.010, 10.015]))
    assert sync.poll(now=10.06) is None  # nothing new: nothing published, nothing counted
    assert sync.published == 1 and sum(sync.drops.values()) == 0


def test_the_newest_in_sync_set_is_chosen_among_buffered_frames():
    sync = _sync()
    sync.add_state(JOINT_STATE, 10.1, "js")
    _feed(sync, [10.000, 10.001, 10.002])
    _feed(sync, [10.033, 10.034, 10.100])  # the right wrist's newest frame has no partner
    result = sync.poll(now=10.12)
    assert {c: f.stamp for c, f in result.frames.items()} == dict(zip(CAMERAS, [10.000, 10.001, 10.002]))
    # Once the right wrist catches up, the newer set wins.
    sync.add_frame("head", 10.066, "h")
    sync.add_frame("left_wrist", 10.067, "l")
    sync.add_frame("right_wrist", 10.110, "r")
    sync.add_frame("head", 10.100, "h2")
    sync.add_frame("left_wrist", 10.101, "l2")
    result = sync.poll(now=10.12)
    assert {c: f.stamp for c, f in result.frames.items()} == dict(zip(CAMERAS, [10.100, 10.101, 10.110]))


def test_skewed_stale_and_joint_state_problems_are_dropped_and_counted():
    sync = _sync()
    sync.add_state(JOINT_STATE, 10.0, "js")
    _feed(sync, [10.0, 10.05, 10.10])  # 100 ms apart
    assert sync.poll(now=10.11) is None and sync.drops["skew"] == 1
    assert sync.poll(now=10.12) is None and sync.drops["skew"] == 1  # same buffers: counted once

    sync = _sync()
    sync.add_state(JOINT_STATE, 20.0, "js")
    _feed(sync, [19.5, 19.5, 19.5])
    assert sync.poll(now=20.0) is None and sync.drops["stale"] == 1

    sync = _sync()
    _feed(sync, [30.0, 30.0, 30.0])
    assert sync.poll(now=30.01) is None and sync.drops["no_state"] == 1
    sync.add_state(JOINT_STATE, 29.5, "old")
    _feed(sync, [30.03, 30.03, 30.03])
    assert sync.poll(now=30.04) is None and sync.drops["state_stale"] == 1
    sync.add_state(JOINT_STATE, 30.035, "fresh")
    _feed(sync, [30.06, 30.06, 30.06])
    result = sync.poll(now=30.07)
    assert result is not None and result.joint_state.item == "fresh"


def test_out_of_order_frames_are_ignored_and_rates_measured():
    sync = _sync(require_state=False)
    for i in range(31):
        sync.add_frame("head", 1.0 + i / 30, i)
    sync.add_frame("head", 1.5, "late")  # older than the newest: ignored
    assert sync.stats["head"].received == 31
    assert abs(sync.stats["head"].rate() - 30.0) < 0.5


def test_frames_arriving_one_camera_at_a_time_are_not_counted_as_skew():
    sync = _sync()
    sync.add_state(JOINT_STATE, 10.0, "js")
    _feed(sync, [10.0, 10.0, 10.0])
    assert sync.poll(now=10.01) is not None
    sync.add_frame("head", 10.5, "h")  # the other two are still in flight
    assert sync.poll(now=10.51) is None
    assert sync.drops["skew"] == 0
    sync.add_frame("left_wrist", 10.5, "l")
    sync.add_frame("right_wrist", 10.5, "r")
    sync.add_state(JOINT_STATE, 10.5, "js")
    assert sync.poll(now=10.52) is not None and sum(sync.drops.values()) == 0
    # Late but complete: counted once as stale.
    _feed(sync, [11.0, 11.0, 11.0])
    assert sync.poll(now=11.5) is None and sync.drops["stale"] == 1
    assert sync.poll(now=11.6) is None and sync.drops["stale"] == 1


def test_the_state_nearest_the_capture_is_paired_not_the_newest():
    sync = _sync(state_sources=(JOINT_STATE, "eef/left"))
    for stamp in (9.95, 10.0, 10.05, 10.10):
        sync.add_state(JOINT_STATE, stamp, f"js@{stamp}")
        sync.add_state("eef/left", stamp + 0.004, f"eef@{stamp}")
    _feed(sync, [10.0, 10.005, 10.01])
    result = sync.poll(now=10.11)
    assert result.joint_state.item == "js@10.0" and result.states["eef/left"].item == "eef@10.0"
    # A source with nothing near the capture (the EEF stream stalled) refuses the set.
    for stamp in (10.15, 10.2, 10.25, 10.3):
        sync.add_state(JOINT_STATE, stamp, f"js@{stamp}")
    _feed(sync, [10.3, 10.3, 10.3])
    assert sync.poll(now=10.31) is None and sync.drops["state_stale"] == 1


def test_sets_sooner_than_the_min_interval_wait_uncounted():
    sync = _sync(min_interval=0.09)
    sync.add_state(JOINT_STATE, 10.0, "js")
    _feed(sync, [10.0, 10.0, 10.0])
    assert sync.poll(now=10.01) is not None
    sync.add_state(JOINT_STATE, 10.033, "js")
    _feed(sync, [10.033, 10.033, 10.033])
    assert sync.ready() and sync.poll(now=10.04) is None
    sync.add_state(JOINT_STATE, 10.099, "js")
    _feed(sync, [10.099, 10.099, 10.099])  # a frame a millisecond early is on time
    assert sync.poll(now=10.1) is not None
    assert not sync.ready() and sync.published == 2 and sum(sync.drops.values()) == 0
