"""Demos to checkpoints, end to end in simulation: the scripted expert drives the arms while
the episode recorder writes two episodes (real nodes over DDS, in a composed runner in its
own process); the bags become a LeRobot v3 dataset, checked field by field; tiny models
train a few steps of each stage on CPU; the Stage III checkpoint is swapped into a running
policy node through LoadCheckpoint. Bad bags fail with their reason and write nothing."""

import json
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO_ROOT, wait_for

pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rotvla_msgs.srv import LoadCheckpoint, StartEpisode, StopEpisode  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from rotvla_ros.data.convert import ConversionConfig, ConversionError, convert  # noqa: E402
from rotvla_ros.data.lerobot_dataset import LeRobotV3Dataset  # noqa: E402
from rotvla_ros.model.config import DUAL_ARM_EEF_ACTION_NAMES  # noqa: E402
from rotvla_ros.nodes.common import RELIABLE_QOS  # noqa: E402
from rotvla_ros.policy import RotVLAPolicy  # noqa: E402
from rotvla_ros.train.config import load_config  # noqa: E402
from rotvla_ros.train.trainer import Trainer  # noqa: E402

CAMERAS = ("head", "left_wrist", "right_wrist")


class Operator:
    """The test's side: calls the recorder's services, watches task success."""

    def __init__(self):
        self.node = Node("demo_operator")
        self.success = []
        self.node.create_subscription(Bool, "/sim/task_success", lambda m: self.success.append(m.data), RELIABLE_QOS)
        self.start = self.node.create_client(StartEpisode, "/rotvla/recorder/start")
        self.stop = self.node.create_client(StopEpisode, "/rotvla/recorder/stop")
        self.discard = self.node.create_client(Trigger, "/rotvla/recorder/discard")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call(self, client, request, timeout=30):
        assert client.wait_for_service(timeout_sec=60)
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout)
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def record_episode(peer_factory, operator, seed: int, output: Path, discard_first: bool = False):
    runner = peer_factory(sys.executable, "-m", "rotvla_ros.nodes.runner", "--expert", "--no-policy", "--record",
                          "--seed", str(seed), "--ros-args", "-p", f"output_dir:={output}", "-p", "camera_rate:=10.0")
    if discard_first:
        reply = operator.call(operator.start, StartEpisode.Request(task="block_to_plate", operator_name="test"))
        assert reply.success, reply.message
        assert operator.call(operator.discard, Trigger.Request()).success
    operator.success.clear()
    reply = operator.call(operator.start, StartEpisode.Request(task="block_to_plate", instruction="put the block on the plate",
                                                               operator_name="scripted expert"))
    assert reply.success, reply.message
    assert operator.spin_until(lambda: any(operator.success), 120), "".join(runner.lines[-30:])
    stopped = operator.call(operator.stop, StopEpisode.Request(task_success=True, notes=f"seed {seed}"))
    assert stopped.success and stopped.message_count > 100 and stopped.duration > 5.0, stopped
    runner.proc.send_signal(signal.SIGINT)
    assert runner.proc.wait(timeout=60) == 0, "".join(runner.lines[-30:])
    return Path(stopped.path)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory, rclpy_context):
    from conftest import Peer

    output = tmp_path_factory.mktemp("demos")
    operator = Operator()
    peers = []
    factory = lambda *a: peers.append(Peer(*a)) or peers[-1]  # noqa: E731
    try:
        paths = [record_episode(factory, operator, seed, output, discard_first=(seed == 0)) for seed in (0, 1)]
    finally:
        operator.close()
        for peer in peers:
            peer.stop()
    return output, paths


@pytest.fixture(scope="module")
def dataset(episodes, tmp_path_factory):
    _, paths = episodes
    root = tmp_path_factory.mktemp("datasets") / "block_to_plate"
    info = convert(paths, root, ConversionConfig(fps=10), progress=False)
    return root, info


@pytest.mark.timeout(600)
def test_recorded_episodes_are_complete_rosbag2_with_their_metadata(episodes):
    output, paths = episodes
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in paths)  # the discarded one is gone
    from rosbags.highlevel import AnyReader

    for path in paths:
        meta = json.loads((path / "episode.json").read_text())
        assert meta["task"] == "block_to_plate" and meta["success"] is True and meta["operator"] == "scripted expert"
        with AnyReader([path / "bag"]) as reader:  # an ordinary rosbag2 directory (metadata.yaml + mcap)
            topics = {c.topic for c in reader.connections}
            assert {f"/cameras/{c}/color/image_raw" for c in CAMERAS} | {"/joint_states", "/rotvla/eef_pose/left"} <= topics
            assert reader.message_count == meta["message_count"]


@pytest.mark.timeout(600)
def test_the_dataset_is_lerobot_v3_field_by_field(dataset, episodes):
    root, info = dataset
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == 2
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet").to_pylist()
    episodes_table = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert info["total_frames"] == len(data) == sum(e["length"] for e in episodes_table)
    for episode in episodes_table:
        rows = [r for r in data if r["episode_index"] == episode["episode_index"]]
        assert len(rows) == episode["length"] == episode["dataset_to_index"] - episode["dataset_from_index"]
        assert episode["length"] >= 50  # the expert's task takes more than 5 s
        assert [r["frame_index"] for r in rows] == list(range(len(rows)))
        assert np.allclose(np.diff([r["timestamp"] for r in rows]), 0.1, atol=1e-4)  # resampled on header stamps
        state = np.array([r["observation.state"] for r in rows])
        action = np.array([r["action"] for r in rows])
        assert state.shape == (len(rows), 20) and np.allclose(action[:-1], state[1:])  # action: the next pose
        rotation = state[:, 3:9].reshape(-1, 2, 3)
        assert np.allclose(np.linalg.norm(rotation, axis=-1), 1, atol=1e-5)  # Rotate6D columns
        assert state[:, 9].min() < 0.03 < state[:, 9].max()  # the left gripper closed on the block and opened
        key = "observation.images.head"
        assert episode[f"videos/{key}/to_timestamp"] - episode[f"videos/{key}/from_timestamp"] == pytest.approx(
            episode["length"] / 10)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    all_state = np.array([r["observation.state"] for r in data])
    assert np.allclose(stats["observation.state"]["mean"], all_state.mean(0), atol=1e-5)
    assert np.allclose(stats["action"]["max"], np.array([r["action"] for r in data]).max(0), atol=1e-6)
    assert np.array(stats["observation.images.head"]["mean"]).shape == (3, 1, 1)
    assert info["features"]["action"]["names"] == list(DUAL_ARM_EEF_ACTION_NAMES)
    tasks = pq.read_table(root / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == ["put the block on the plate"]

    reader = LeRobotV3Dataset(root, action_horizon=8, clip_length=3, clip_stride=5)
    item = reader[3]
    assert set(item["images"]) == set(CAMERAS) and item["images"]["head"].shape == (240, 320, 3)
    assert item["images"]["head"].std() > 5 and item["clip"].shape == (3, 240, 320, 3)
    assert item["actions"].shape == (8, 20) and item["instruction"] == "put the block on the plate"
    last = episodes_table[0]["dataset_to_index"] - 1
    assert item is not None and not reader[last]["action_mask"][1:].any()  # padded past the episode's end


@pytest.mark.timeout(900)
def test_each_stage_trains_resumes_and_the_result_swaps_into_a_running_policy_node(dataset, tmp_path, ros):
    root, _ = dataset
    runs = tmp_path / "runs"
    common = dict(dataset=str(root), preset="tiny", batch_size=2, save_every=2, log_every=1, device="cpu", num_workers=0)
    Trainer(load_config("stage1", REPO_ROOT / "config/train/stage1.yaml", output=str(runs / "lam"), steps=3,
                        **common)).run()
    assert (runs / "lam" / "last" / "model.safetensors").exists()

    stage2 = load_config("stage2", REPO_ROOT / "config/train/stage2.yaml", output=str(runs / "pre"), steps=3,
                         lam_checkpoint=str(runs / "lam" / "last"), warmup_steps=2, **common)
    Trainer(stage2).run()
    losses = [json.loads(line) for line in (runs / "pre" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in losses)

    # Stage III, stopped after 2 steps and resumed, equals an uninterrupted run of 4 steps.
    def stage3(output, steps):
        return load_config("stage3", REPO_ROOT / "config/train/stage3.yaml", output=str(output), steps=steps,
                           lam_checkpoint=str(runs / "lam" / "last"), init_checkpoint=str(runs / "pre" / "last"),
                           warmup_steps=2, **common)

    straight = Trainer(stage3(runs / "ft-straight", 4))
    straight.run()
    first = Trainer(stage3(runs / "ft", 4))
    first.run(steps=2)
    saved_moments = {k: v["exp_avg"].clone() for k, v in first.optimizer.state_dict()["state"].items()}
    resumed = Trainer(stage3(runs / "ft", 4), resume=True)
    assert resumed.step == 2
    for k, moment in resumed.optimizer.state_dict()["state"].items():
        assert torch.equal(moment["exp_avg"], saved_moments[k])  # the same optimiser state
    resumed.run()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    vlm_moments = [resumed.optimizer.state[p]["exp_avg"] for p in resumed.model.backbone.parameters() if p.requires_grad]
    assert any(m.abs().sum() > 0 for m in vlm_moments)  # the VLM learned after its warm-up

    # The loop closes: the policy node takes the Stage III checkpoint while it serves.
    from rotvla_ros.nodes.policy_node import PolicyNode

    node = ros.add(PolicyNode(parameter_overrides=[Parameter("device", value="cpu")]))
    client = node.create_client(LoadCheckpoint, "/rotvla/load_checkpoint")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(LoadCheckpoint.Request(path=str(runs / "ft" / "last")))
    assert wait_for(future.done, 120)
    reply = future.result()
    assert reply.success, reply.message
    assert RotVLAPolicy.from_pretrained(runs / "ft" / "last", device="cpu").checkpoint_id == node.checkpoint_id


@pytest.mark.timeout(600)
def test_bad_bags_fail_with_their_reason_and_write_nothing(episodes, tmp_path):
    _, paths = episodes
    good = paths[0]

    def broken_copy(name: str, keep) -> Path:
        """A copy of the first episode's bag keeping only the messages ``keep`` accepts."""
        from rosbags.highlevel import AnyReader
        from rosbags.rosbag2 import StoragePlugin, Writer

        from rotvla_ros.data.rosbag_types import make_typestore

        target = tmp_path / name
        target.mkdir()
        shutil.copy(good / "episode.json", target / "episode.json")
        store = make_typestore()
        with AnyReader([good / "bag"], default_typestore=store) as reader, \
                Writer(target / "bag", version=8, storage_plugin=StoragePlugin.MCAP) as writer:
            connections = {}
            for connection, timestamp, raw in reader.messages():
                msg = reader.deserialize(raw, connection.msgtype)
                if not keep(connection.topic, msg):
                    continue
                if connection.topic not in connections:
                    connections[connection.topic] = writer.add_connection(connection.topic, connection.msgtype,
                                                                          typestore=store)
                writer.write(connections[connection.topic], timestamp, raw)
        return target

    stamp = lambda m: m.header.stamp.sec + m.header.stamp.nanosec * 1e-9  # noqa: E731
    no_camera = broken_copy("no_camera", lambda t, m: t != "/cameras/left_wrist/color/image_raw")
    gap = broken_copy("gap", lambda t, m: not (t == "/rotvla/eef_pose/right" and 2.0 < (stamp(m) % 100) < 3.0)
                      if hasattr(m, "header") else True)
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    mcap = next((truncated / "bag").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    cases = [(no_camera, "no messages on /cameras/left_wrist/color/image_raw"),
             (gap, "/rotvla/eef_pose/right has a gap"),
             (truncated, "cannot read the bag")]
    for bag, reason in cases:
        output = tmp_path / f"out-{bag.name}"
        with pytest.raises(ConversionError) as error:
            convert([good, bag], output, progress=False)
        assert reason in str(error.value) and bag.name in str(error.value)
        assert not output.exists() and not any(p.name.startswith(f".{output.name}") for p in tmp_path.iterdir())
