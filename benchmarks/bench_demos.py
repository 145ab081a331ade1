"""From a recorded demonstration to training: conversion throughput (frames/s of the
dataset written, videos included) on a sim episode recorded here, and the training step
time of the tiny preset on CPU for each stage.

The episode: the simulated cell with the block-to-plate expert driving, the episode
recorder writing it (composed runner, no policy), as an operator would record one.
Usage: python benchmarks/bench_demos.py [--steps 10] [--batch-size 8]"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_table  # noqa: E402


def record(output: Path) -> Path:
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import Bool

    from rotvla_msgs.srv import StartEpisode, StopEpisode

    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotvla_ros.nodes.runner",
            "--expert",
            "--no-policy",
            "--record",
            "--ros-args",
            "-p",
            f"output_dir:={output}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = Node("bench_demos")
    success = []
    node.create_subscription(Bool, "/sim/task_success", lambda m: success.append(m.data), 10)
    start = node.create_client(StartEpisode, "/rotvla/recorder/start")
    stop = node.create_client(StopEpisode, "/rotvla/recorder/stop")
    assert start.wait_for_service(timeout_sec=120)
    future = start.call_async(StartEpisode.Request(task="block_to_plate", operator_name="bench"))
    rclpy.spin_until_future_complete(node, future, timeout_sec=30)
    deadline = time.monotonic() + 180
    while not any(success) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    future = stop.call_async(StopEpisode.Request(task_success=any(success)))
    rclpy.spin_until_future_complete(node, future, timeout_sec=30)
    path = Path(future.result().path)
    runner.send_signal(signal.SIGINT)
    runner.wait(timeout=60)
    node.destroy_node()
    rclpy.try_shutdown()
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from rotvla_ros.data.convert import ConversionConfig, convert
    from rotvla_ros.train.config import load_config
    from rotvla_ros.train.trainer import Trainer

    work = Path(tempfile.mkdtemp())
    episode = record(work / "demos")
    rows = []
    started = time.perf_counter()
    info = convert([episode], work / "dataset", ConversionConfig(fps=10), progress=False)
    seconds = time.perf_counter() - started
    size_mb = sum(p.stat().st_size for p in (episode / "bag").glob("*")) / 1e6
    rows.append(
        [
            "convert (rosbag2 MCAP -> LeRobot v3, 3 x 320x240 libx264)",
            f"{info['total_frames'] / seconds:.1f} frames/s",
            f"{info['total_frames']} frames, {size_mb:.0f} MB bag, {seconds:.1f} s",
        ]
    )
    from rotvla_ros.data.lerobot_dataset import LeRobotV3Dataset

    dataset = LeRobotV3Dataset(work / "dataset", action_horizon=20, clip_length=3, clip_stride=5)
    order = np.random.default_rng(0).permutation(len(dataset))
    for label in ("cold: decoded on demand", "warm: from the decoded-frame cache"):
        started = time.perf_counter()
        for row in order:
            dataset[int(row)]
        seconds = time.perf_counter() - started
        rows.append(
            [
                f"read samples in random order (3 cameras + a 3-frame clip), {label}",
                f"{len(order) / seconds:.0f} samples/s",
                f"{len(order)} samples, one process",
            ]
        )
    warm_up = -(-len(dataset) // args.batch_size) + 1  # an epoch's worth of samples: the frames are cached
    common = dict(
        dataset=str(work / "dataset"),
        preset="tiny",
        batch_size=args.batch_size,
        save_every=10**9,
        log_every=10**9,
        device="cpu",
        num_workers=0,
    )
    stages = [
        ("stage1", dict()),
        ("stage2", dict(lam_checkpoint=str(work / "lam" / "last"))),
        ("stage3", dict(lam_checkpoint=str(work / "lam" / "last"))),
    ]
    for stage, extra in stages:
        trainer = Trainer(
            load_config(
                stage,
                None,
                output=str(work / ("lam" if stage == "stage1" else stage)),
                steps=args.steps + warm_up,
                **common,
                **extra,
            )
        )
        trainer.run(steps=warm_up)
        started = time.perf_counter()
        trainer.run(steps=args.steps)
        per_step = (time.perf_counter() - started) / args.steps
        if stage == "stage1":
            trainer.save()
        rows.append(
            [
                f"train {stage}, tiny, batch {args.batch_size}, CPU",
                f"{per_step * 1e3:.0f} ms/step",
                f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}",
            ]
        )
    print_table("Demos to checkpoints: conversion and training speed", ["what", "speed", "detail"], rows)


if __name__ == "__main__":
    main()
