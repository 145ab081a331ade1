"""Test-pattern cameras: the three colour streams on realsense2_camera's topics, encodings
and frame ids (a square moving over a static scene), for running the stack without camera
hardware or simulation. Stamps are the time of capture (publication) on the node's clock."""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES

from ..ingest.images import fill_image
from .common import declare, run_node


class PatternCameras(Node):
    def __init__(self, **kwargs):
        super().__init__("pattern_cameras", **kwargs)
        self.cameras = list(declare(self, "camera_names", list(CAMERA_NAMES), "Cameras to publish."))
        namespace = declare(self, "camera_namespace", topics.CAMERAS, "Namespace of the camera topics.")
        color_topic = declare(self, "color_topic", "color/image_raw", "Colour topic under each camera.")
        self.width = declare(self, "width", 640, "Image width, px.")
        self.height = declare(self, "height", 480, "Image height, px.")
        self.encoding = declare(self, "encoding", "rgb8", "rgb8 or bgr8 (the D405 colour stream is rgb8 by default).")
        fps = declare(self, "fps", 30.0, "Frames per second per camera.")
        # Reliable, as realsense2_camera publishes by default.
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers_ = {
            c: self.create_publisher(Image, f"{namespace.rstrip('/')}/{c}/{color_topic}", qos) for c in self.cameras
        }
        rng = np.random.default_rng(0)
        # A static, textured scene per camera, and a square that moves over it.
        self.scenes = {c: rng.integers(40, 120, (self.height, self.width, 3), dtype=np.uint8) for c in self.cameras}
        self.frame = 0
        self.create_timer(1.0 / fps, self._publish)

    def _publish(self) -> None:
        stamp = self.get_clock().now().to_msg()
        side = self.height // 4
        for i, camera in enumerate(self.cameras):
            pixels = self.scenes[camera].copy()
            x = (self.frame * 4 + i * 100) % (self.width - side)
            y = (self.height - side) // 2
            pixels[y : y + side, x : x + side] = (220, 60 + 60 * i, 40)
            image = fill_image(Image(), pixels, self.encoding)
            image.header.stamp = stamp
            image.header.frame_id = f"{camera}_color_optical_frame"
            self.publishers_[camera].publish(image)
        self.frame += 1


def main(args=None):
    run_node(PatternCameras, args, num_threads=2)


if __name__ == "__main__":
    main()
