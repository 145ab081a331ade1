"""Random access to video frames (``rotvla_ros.data.video``): any frame, in any order,
equals the frame a full sequential decode gives, whatever the keyframe spacing, in the
process that opened the file and in another one."""

import pickle

import numpy as np
import pytest

from rotvla_ros.data.convert import _VideoWriter
from rotvla_ros.data.video import VideoDecodeError, VideoFrames

FRAMES, HEIGHT, WIDTH = 60, 48, 64


def write_video(path, gop):
    writer = _VideoWriter(path, 10, WIDTH, HEIGHT, "libx264", gop)
    rng = np.random.default_rng(0)
    for k in range(FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
        frame[:, : (k % WIDTH) + 1] = 220  # a bar whose length is the frame's index
        frame[: HEIGHT // 2] += rng.integers(0, 10, (HEIGHT // 2, WIDTH, 3), dtype=np.uint8)
        writer.write(frame)
    writer.close()


def sequential(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, H, W, 3)


@pytest.mark.parametrize("gop", [2, 12, 250])
def test_any_frame_in_any_order_equals_the_sequential_decode(tmp_path, gop):
    path = tmp_path / "video.mp4"
    write_video(path, gop)
    expected = sequential(path)
    assert len(expected) == FRAMES
    video = VideoFrames(path, cache_frames=4)
    assert len(video) == FRAMES
    order = np.random.default_rng(gop).permutation(FRAMES).tolist() + [59, 0, 30, 31, 29]
    for index in order:
        assert np.array_equal(video[index], expected[index]), index
    assert len(video._cache) <= 4  # memory stays bounded
    with pytest.raises(IndexError):
        video[FRAMES]

    # In a DataLoader worker: the pickled reader reopens the file itself.
    copy = pickle.loads(pickle.dumps(video))
    assert copy._container is None
    assert np.array_equal(copy[17], expected[17])


def test_a_missing_or_corrupt_video_is_a_clear_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        len(VideoFrames(tmp_path / "missing.mp4"))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        VideoFrames(corrupt)[0]
