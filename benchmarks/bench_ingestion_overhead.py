"""Time outside the model forward, from camera to action chunk, and end-to-end latency.

Three 640x480 bgr8 streams at 30 fps (a process of their own) -> camera ingestion (this
process, instrumented) -> policy node with the tiny model on the CPU (a process of its own)
-> ActionChunk back here. Per chunk:

  image transport   ingestion receipt - capture stamp (mean of the three cameras)
  ingestion         synchronise + convert + crop/resize + publish one Observation
  policy outside    Observation publish -> chunk receipt, minus the model forward
                    (VL prefix + denoising): transport both ways, queueing, image
                    conversion, pre/post-processing
  overhead          the sum of the three (target: <= 5 ms p99)
  end to end        chunk receipt - capture stamp of the oldest image; includes waiting
                    for the next policy-rate tick (up to 1/rate) and the forward

Usage: python benchmarks/bench_ingestion_overhead.py [--seconds 20] [--rate 10]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import percentiles, print_table  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=10.0, help="policy rate, Hz")
    args = parser.parse_args()

    import rclpy
    import torch
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from rotvla_msgs.msg import ActionChunk
    from rotvla_ros.model.config import tiny_config
    from rotvla_ros.nodes.camera_ingestion import CameraIngestionNode
    from rotvla_ros.nodes.common import to_seconds
    from rotvla_ros.policy import RotVLAPolicy

    checkpoint = Path(tempfile.mkdtemp()) / "tiny"
    torch.manual_seed(0)
    RotVLAPolicy.from_config(tiny_config(), device="cpu").save_pretrained(checkpoint)
    policy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotvla_ros.nodes.policy_node",
            "--ros-args",
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            "device:=cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cameras = subprocess.Popen(
        [sys.executable, "-m", "rotvla_ros.nodes.pattern_cameras", "--ros-args", "-p", "encoding:=bgr8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    rclpy.init()
    ingestion = CameraIngestionNode(
        parameter_overrides=[
            Parameter("step_period", value=1.0 / args.rate),
            Parameter("require_state", value=False),
            Parameter("image_size", value=tiny_config().image_size),
        ]
    )
    image_latency: list[float] = []
    published: dict[int, tuple[float, float]] = {}  # observation sequence -> (ingestion seconds, publish time)

    add_frame = ingestion.sync.add_frame

    def timed_add_frame(camera, stamp, item):  # a frame received and decoded
        image_latency.append(time.time() - stamp)
        add_frame(camera, stamp, item)

    ingestion.sync.add_frame = timed_add_frame
    publish_observation = ingestion._publish_observation

    def timed_publish():
        sequence, start = ingestion.sequence, time.perf_counter()
        publish_observation()
        if ingestion.sequence > sequence:
            published[sequence] = (time.perf_counter() - start, time.time())

    ingestion._publish_observation = timed_publish
    # The timer captured the bound method at creation: point it at the wrapper.
    for timer in ingestion.timers:
        if timer.timer_period_ns == int(1e9 / args.rate):
            timer.callback = timed_publish
    listener = Node("bench_listener")
    chunks: list[tuple[float, ActionChunk]] = []
    listener.create_subscription(ActionChunk, "/rotvla/action_chunk", lambda m: chunks.append((time.time(), m)), 50)
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(ingestion)
    executor.add_node(listener)
    deadline = time.monotonic() + 15  # start-up of the other processes
    while not chunks and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    chunks.clear()
    image_latency.clear()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    for child in (policy, cameras):
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()

    rows, overhead, end_to_end, outside, ingest, forward = [], [], [], [], [], []
    transport = float(np.mean(image_latency)) if image_latency else float("nan")
    for received, chunk in chunks:
        if chunk.observation_sequence not in published:
            continue
        ingest_s, published_at = published[chunk.observation_sequence]
        timings = {t.stage: t.seconds for t in chunk.timings}
        model = timings["vl_prefix"] + timings["denoise"]
        outside_s = (received - published_at) - model
        ingest.append(ingest_s)
        outside.append(outside_s)
        forward.append(model)
        overhead.append(transport + ingest_s + outside_s)
        end_to_end.append(received - to_seconds(chunk.header.stamp))
    for name, values in (
        ("image transport (3 x 640x480 @ 30 fps)", image_latency),
        ("ingestion: sync+convert+resize+publish", ingest),
        ("policy node outside the forward", outside),
        ("overhead total", overhead),
        ("model forward (tiny, CPU)", forward),
        ("end to end: capture -> chunk received", end_to_end),
    ):
        p50, p99, mean = percentiles(values)
        rows.append([name, len(values), f"{p50:.2f}", f"{p99:.2f}", f"{mean:.2f}"])
    print_table(
        f"Camera-to-chunk overhead (ms), policy rate {args.rate:g} Hz, {args.seconds:g} s",
        ["stage", "samples", "p50", "p99", "mean"],
        rows,
        [
            "Overhead = image transport + ingestion + policy node outside the model forward (target <= 5 ms p99).",
            "End to end includes waiting for the next policy-rate tick (up to 1/rate) and the forward.",
        ],
    )
    executor.shutdown()
    ingestion.destroy_node()
    listener.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
