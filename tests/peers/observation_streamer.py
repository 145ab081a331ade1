"""A light process for the live-swap test: publishes Observations at a fixed rate and
records when each ActionChunk arrives; prints one JSON line per chunk when done.

    observation_streamer.py RATE_HZ SECONDS

It imports no torch, so its own pauses (a large heap's garbage collection, thread pools)
do not pollute the gaps it measures between chunks."""

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from rotvla_msgs.msg import ActionChunk, Observation

CAMERAS = ["head", "left_wrist", "right_wrist"]


def main():
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = Node("observation_streamer")
    publisher = node.create_publisher(
        Observation, "/rotvla/observation", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    )
    chunks = []
    node.create_subscription(
        ActionChunk,
        "/rotvla/action_chunk",
        lambda m: chunks.append(
            (time.monotonic(), m.observation_sequence, m.checkpoint_id, sorted(t.stage for t in m.timings))
        ),
        50,
    )
    rng = np.random.default_rng(0)
    images = []
    for _ in CAMERAS:
        image = Image(height=56, width=56, encoding="rgb8", step=56 * 3)
        image.data = rng.integers(0, 256, 56 * 56 * 3, dtype=np.uint8).tobytes()
        images.append(image)
    sequence = [0]

    def publish():
        obs = Observation(camera_names=CAMERAS, images=images, sequence=sequence[0])
        obs.header.stamp = node.get_clock().now().to_msg()
        for image in obs.images:
            image.header.stamp = obs.header.stamp
        publisher.publish(obs)
        sequence[0] += 1

    node.create_timer(1.0 / rate, publish)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    # The window of ``seconds`` starts at the first chunk: the node may take a while to start.
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
        if chunks and deadline is None:
            print("ready", flush=True)
            deadline = time.monotonic() + seconds
    for arrival, observation_sequence, checkpoint_id, stages in chunks:
        record = {"t": arrival, "seq": observation_sequence, "id": checkpoint_id, "stages": stages}
        print(json.dumps(record), flush=True)
    print("done", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
