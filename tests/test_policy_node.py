"""Policy node over DDS with tiny checkpoints: chunks from observations, refusals, the live
swap while observations stream, failed swaps, NaN outputs."""

import json
import time

import numpy as np
import pytest
import torch

from conftest import wait_for

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from rotvla_msgs.msg import ActionChunk, Observation  # noqa: E402
from rotvla_msgs.srv import LoadCheckpoint, SetInstruction  # noqa: E402
from rotvla_ros.ingest.images import fill_image  # noqa: E402
from rotvla_ros.model.config import tiny_config  # noqa: E402
from rotvla_ros.nodes.common import OBSERVATION_QOS  # noqa: E402
from rotvla_ros.nodes.policy_node import PolicyNode  # noqa: E402
from rotvla_ros.policy import RotVLAPolicy  # noqa: E402

CAMERAS = ["head", "left_wrist", "right_wrist"]
LIVENESS_GAP_S = 4.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    ids = {}
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        torch.manual_seed(seed)
        ids[name] = RotVLAPolicy.from_config(tiny_config(), device="cpu").save_pretrained(root / name)
    return root, ids


class Driver:
    def __init__(self, ros):
        self.node = ros.add(Node("policy_test_driver"))
        self.observations = self.node.create_publisher(Observation, "/rotvla/observation", OBSERVATION_QOS)
        self.chunks, self.paths, self.diagnostics = [], [], []
        self.node.create_subscription(
            ActionChunk, "/rotvla/action_chunk", lambda m: self.chunks.append((time.monotonic(), m)), 50
        )
        self.node.create_subscription(MarkerArray, "/rotvla/planned_path", self.paths.append, 10)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if s.name == "rotvla/policy"),
            10,
        )
        self.load = self.node.create_client(LoadCheckpoint, "/rotvla/load_checkpoint")
        self.instruct = self.node.create_client(SetInstruction, "/rotvla/set_instruction")
        self.sequence = 0

    def observation(self, age: float = 0.0) -> Observation:
        obs = Observation(camera_names=CAMERAS, instruction="")
        obs.header.stamp = (self.node.get_clock().now() - rclpy_duration(age)).to_msg()
        obs.sequence = self.sequence
        self.sequence += 1
        rng = np.random.default_rng(obs.sequence)
        for _camera in CAMERAS:
            image = fill_image(Image(), rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
            image.header.stamp = obs.header.stamp
            obs.images.append(image)
        return obs

    def publish(self, age: float = 0.0) -> Observation:
        obs = self.observation(age)
        self.observations.publish(obs)
        return obs

    def call(self, client, request, timeout=60.0):
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(request)
        assert wait_for(future.done, timeout)
        return future.result()


def rclpy_duration(seconds):
    from rclpy.duration import Duration

    return Duration(nanoseconds=int(seconds * 1e9))


def make_node(ros, checkpoint, **params):
    overrides = [
        Parameter("checkpoint", value=str(checkpoint)),
        Parameter("device", value="cpu"),
        Parameter("max_observation_age", value=1.0),
    ]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ros.add(PolicyNode(parameter_overrides=overrides))


def test_observation_to_a_stamped_chunk_and_a_planned_path(ros, checkpoints):
    root, ids = checkpoints
    node = make_node(ros, root / "tiny-a")
    driver = Driver(ros)
    assert wait_for(lambda: driver.observations.get_subscription_count() > 0, 10)
    obs = driver.publish()
    assert wait_for(lambda: driver.chunks, 10)
    chunk = driver.chunks[0][1]
    config = tiny_config()
    assert chunk.header.stamp == obs.header.stamp and chunk.observation_sequence == obs.sequence
    assert chunk.checkpoint_id == ids["tiny-a"] == node.checkpoint_id
    assert chunk.horizon == config.action_horizon and tuple(chunk.action_names) == config.action_names
    actions = np.asarray(chunk.actions).reshape(chunk.horizon, len(chunk.action_names))
    assert np.isfinite(actions).all()
    assert (chunk.latent_tokens, chunk.latent_dim) == (config.plan_tokens, config.latent_dim)
    assert len(chunk.latent_plan) == config.plan_tokens * config.latent_dim**2
    assert abs(chunk.dt.nanosec * 1e-9 - config.dt) < 1e-9
    assert {t.stage for t in chunk.timings} >= {"preprocess", "vl_prefix", "denoise", "total"}
    assert wait_for(lambda: driver.paths, 5)
    markers = driver.paths[0].markers
    assert [m.header.frame_id for m in markers] == ["left_base_link", "right_base_link"]
    assert len(markers[0].points) == config.action_horizon
    assert markers[0].points[0].x == pytest.approx(actions[0, 0], abs=1e-6)


def test_stale_observations_are_refused_and_instruction_service_works(ros, checkpoints):
    root, _ = checkpoints
    node = make_node(ros, root / "tiny-a")
    driver = Driver(ros)
    assert wait_for(lambda: driver.observations.get_subscription_count() > 0, 10)
    driver.publish(age=5.0)
    assert wait_for(lambda: node.counters.stale_observations == 1, 10)
    time.sleep(0.2)
    assert driver.chunks == []
    reply = driver.call(driver.instruct, SetInstruction.Request(instruction="stack the cups"))
    assert reply.success and reply.previous_instruction == "" and node.instruction == "stack the cups"
    reply = driver.call(driver.instruct, SetInstruction.Request(instruction=" \t"))
    assert not reply.success and "empty" in reply.message and node.instruction == "stack the cups"


def _bad_checkpoints(root, tmp_path):
    """A missing path, corrupt weights, and a config with another action layout."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in (root / "tiny-a").iterdir():
        if f.is_file():
            (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    incompatible = tmp_path / "incompatible"
    RotVLAPolicy.from_config(tiny_config()).save_pretrained(incompatible)
    config = json.loads((incompatible / "config.json").read_text())
    config["model"]["action_names"] = config["model"]["action_names"][:10]
    (incompatible / "config.json").write_text(json.dumps(config))
    return [(tmp_path / "missing", "not found"), (corrupt, "corrupt"), (incompatible, "does not match the robot")]


@pytest.mark.parametrize("inference_mode", ["eager", "compile"])
def test_live_swap_while_observations_stream_then_failed_swaps_keep_the_old_model(
    ros, checkpoints, tmp_path, peer_factory, inference_mode
):
    """Deployed layout: the node in a process of its own, observations streamed at the policy
    rate by another light process that also times the chunks; this process only calls the
    service. With the fast path (``compile``: the CPU's form of it; ``graph`` needs CUDA) the
    new checkpoint is compiled on the loader thread, within its warm-up, while the old one
    serves, and serves from its first chunk on the fast path."""
    import sys

    from conftest import TESTS_DIR

    root, ids = checkpoints
    bad = _bad_checkpoints(root, tmp_path)
    node = peer_factory(
        sys.executable,
        "-m",
        "rotvla_ros.nodes.policy_node",
        "--ros-args",
        "-p",
        f"checkpoint:={root / 'tiny-a'}",
        "-p",
        "device:=cpu",
        "-p",
        "max_observation_age:=1.0",
        "-p",
        "min_swap_interval:=0.0",
        "-p",
        f"inference_mode:={inference_mode}",
    )  # swaps in quick succession, each refused for its own reason
    period, seconds = 0.1, 12.0  # the policy rate; the streaming window
    streamer = peer_factory(TESTS_DIR / "peers" / "observation_streamer.py", str(1 / period), str(seconds))
    streamer.wait_ready(timeout=60 if inference_mode == "eager" else 240)  # a cold compile: ~40 s here
    driver = Driver(ros)
    time.sleep(0.5)
    phases = {"swap": time.monotonic()}
    reply = driver.call(driver.load, LoadCheckpoint.Request(path=str(root / "tiny-b")))
    phases["swapped"] = time.monotonic()
    assert reply.success, reply.message
    assert reply.checkpoint_id == ids["tiny-b"] and reply.previous_checkpoint_id == ids["tiny-a"]
    assert reply.load_seconds > 0 and reply.warmup_seconds > 0
    assert ("compiled in" in reply.message) == (inference_mode == "compile"), reply.message
    time.sleep(1.0)
    phases["failures"] = time.monotonic()
    for path, reason in bad:  # each refused with its reason while tiny-b keeps serving
        reply = driver.call(driver.load, LoadCheckpoint.Request(path=str(path)))
        assert not reply.success and reason in reply.message, reply.message
        assert reply.checkpoint_id == ids["tiny-b"]
    phases["failed"] = time.monotonic()
    assert streamer.proc.wait(timeout=seconds + 30) == 0
    assert node.proc.poll() is None, "the policy node died"

    records = [json.loads(line) for line in streamer.lines if line.startswith("{")]
    # The stream goes on through the swap and the refusals (the gap check below is the strict
    # one). Eager inference on the 2-core Xeon box, beside the streamer and this process, gave
    # 68-80 of the 120 observations a chunk in fresh-clone runs: half is the floor.
    assert len(records) > 0.5 * seconds / period, f"only {len(records)} chunks in {seconds} s"
    times = np.array([r["t"] for r in records])
    chunk_ids = [r["id"] for r in records]
    gaps = np.diff(times)
    worst = int(np.argmax(gaps))
    # Liveness, not speed: the stream never stops. The speed target (no gap over two policy
    # periods during a swap) is measured by benchmarks/bench_live_swap.py, as the project
    # checks speed targets; on a loaded 2-core machine a swap has paused it for up to ~2 s.
    assert gaps.max() <= LIVENESS_GAP_S, (
        f"the chunk stream stopped for {gaps.max():.3f} s, between observations "
        f"{records[worst]['seq']} and {records[worst + 1]['seq']}, at "
        f"{ {k: round(times[worst] - v, 3) for k, v in phases.items()} } s after each phase"
    )
    first_b = chunk_ids.index(ids["tiny-b"])
    assert set(chunk_ids[:first_b]) == {ids["tiny-a"]} and set(chunk_ids[first_b:]) == {ids["tiny-b"]}
    # The eager path times each denoising step; the fast path its whole loop, as one stage.
    per_step = {any(s.startswith("denoise_step_") for s in r["stages"]) for r in records}
    assert per_step == {inference_mode == "eager"}
    assert wait_for(
        lambda: any({kv.key: kv.value for kv in s.values}.get("failed_swaps") == "3" for s in driver.diagnostics), 5
    )
    values = {kv.key: kv.value for kv in driver.diagnostics[-1].values}
    assert values["swaps"] == "2" and values["nonfinite_outputs"] == "0"  # the start-up load and one swap


def test_an_inference_mode_the_node_cannot_use_is_a_counted_refusal(ros, checkpoints):
    """A mode this device cannot run (graph needs CUDA) refuses each load, counted; a mode that
    does not exist is a configuration error: the node does not start (issue 30, item 7: it
    stayed up serving nothing, every later load failing the same way)."""
    root, _ = checkpoints
    with pytest.raises(ValueError, match="parameter inference_mode: 'bogus' is not one of"):
        make_node(ros, root / "tiny-a", inference_mode="bogus")
    node = make_node(ros, root / "tiny-a", inference_mode="graph")
    assert node._policy is None and node.counters.failed_swaps == 1  # alive, serving nothing
    driver = Driver(ros)
    reply = driver.call(driver.load, LoadCheckpoint.Request(path=str(root / "tiny-b")))
    assert not reply.success and "needs a CUDA device" in reply.message, reply.message
    assert node.counters.failed_swaps == 2


def test_a_second_load_during_a_load_is_refused(ros, checkpoints):
    root, ids = checkpoints
    make_node(ros, root / "tiny-a", warmup_passes=60)  # a load of a second or so
    driver = Driver(ros)
    assert driver.load.wait_for_service(timeout_sec=10)
    first = driver.load.call_async(LoadCheckpoint.Request(path=str(root / "tiny-b")))
    time.sleep(0.1)
    second = driver.load.call_async(LoadCheckpoint.Request(path=str(root / "tiny-b")))
    assert wait_for(lambda: first.done() and second.done(), 60)
    assert first.result().success
    # Refused while the first loads, or (queued behind it) as too soon after its swap.
    assert not second.result().success and second.result().message.startswith(("busy", "too soon")), second.result()


def test_a_model_that_emits_nan_publishes_nothing_and_diagnostics_report_it(ros, checkpoints):
    root, _ = checkpoints
    node = make_node(ros, root / "tiny-a")
    driver = Driver(ros)
    assert wait_for(lambda: driver.observations.get_subscription_count() > 0, 10)
    with torch.no_grad():  # the serving model goes bad at run time
        node._policy.model.expert.action_out.bias[0] = float("nan")
    for _ in range(3):
        driver.publish()
        time.sleep(0.1)
    assert wait_for(lambda: node.counters.nonfinite_outputs >= 1, 10)
    time.sleep(0.2)
    assert driver.chunks == []
    assert wait_for(
        lambda: any(
            {kv.key: kv.value for kv in s.values}.get("nonfinite_outputs", "0") != "0" for s in driver.diagnostics
        ),
        5,
    )
    from diagnostic_msgs.msg import DiagnosticStatus

    assert driver.diagnostics[-1].level == DiagnosticStatus.WARN


def test_rotvla_ctl_sets_the_instruction_and_swaps_checkpoints(ros, checkpoints):
    """The command-line client against a running node, as an engineer would use it."""
    import subprocess
    import sys

    root, ids = checkpoints
    node = make_node(ros, root / "tiny-a", min_swap_interval=0.0)  # a good swap, then a bad one at once
    ctl = [sys.executable, "-m", "rotvla_ros.nodes.rotvla_ctl"]
    result = subprocess.run(
        [*ctl, "instruct", "put the block into the drawer"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert node.instruction == "put the block into the drawer" and "instruction set" in result.stdout
    result = subprocess.run([*ctl, "load", str(root / "tiny-b")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ids["tiny-b"] in result.stdout and node.checkpoint_id == ids["tiny-b"]
    result = subprocess.run([*ctl, "load", str(root / "nope")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not found" in result.stdout and node.checkpoint_id == ids["tiny-b"]
