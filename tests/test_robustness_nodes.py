"""Bad input over DDS against the real nodes, each in its own process (as launch runs them):
one test per finding of the reliability issue that was made over DDS. Whatever arrives, the
node stays up, refuses what it cannot use with a counted reason, and keeps serving; what it
echoes stays bounded."""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, executor_process

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from rotvla_common.action_space import ARMS, CAMERA_NAMES  # noqa: E402
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES
from rotvla_common.ros import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, to_duration, to_seconds, to_time  # noqa: E402
from rotvla_msgs.msg import ActionChunk, ExecutorStatus, Observation  # noqa: E402
from rotvla_msgs.srv import LoadCheckpoint, SetInstruction  # noqa: E402
from rotvla_ros.ingest.images import fill_image  # noqa: E402
from rotvla_ros.nodes.common import OBSERVATION_QOS  # noqa: E402

TINY = REPO_ROOT / "models" / "tiny-random"


class Client:
    """The test's side of the graph, spun in the test's thread."""

    def __init__(self, name: str):
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def listen(self, msg_type, topic: str, qos=RELIABLE_QOS) -> list:
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=60), f"no {name}"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"{name}: no reply in {timeout} s (did the node die?)"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def client(rclpy_context):
    c = Client("robustness_client")
    yield c
    c.close()


def node_process(peer_factory, module: str, *params: str):
    return peer_factory(sys.executable, "-m", module, "--ros-args", *[a for p in params for a in ("-p", p)])


def alive(peer) -> bool:
    return peer.proc.poll() is None


def frame(camera: str, stamp: float, size=(60, 80)) -> Image:
    msg = fill_image(Image(), np.full(size + (3,), 100, np.uint8), "rgb8")
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = f"{camera}_color_optical_frame"
    return msg


class RobotStatePublisher:
    """The robot's state as the executor publishes it: the joint states (both grippers) and
    each arm's EEF pose, all stamped ``stamp``."""

    def __init__(self, node: Node):
        self.joints = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.poses = {arm: node.create_publisher(PoseStamped, f"/rotvla/eef_pose/{arm}", SENSOR_QOS) for arm in ARMS}

    def publish(self, stamp: float) -> None:
        state = JointState(name=[f"{arm}_gripper" for arm in ARMS], position=[0.04] * len(ARMS))
        state.header.stamp = to_time(stamp)
        self.joints.publish(state)
        for arm, publisher in self.poses.items():
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = to_time(stamp), f"{arm}_base_link"
            pose.pose.position.x, pose.pose.orientation.w = 0.3, 1.0
            publisher.publish(pose)


def latest_diagnostic(box: list, name: str):
    statuses = [s for array in box for s in array.status if s.name == name]
    return statuses[-1] if statuses else None


# -- camera ingestion ------------------------------------------------------------------------


def test_ingestion_survives_truncated_images_future_frames_and_huge_instructions(client, peer_factory):
    """Findings 1, 9 and 6 (instruction): one truncated CDR Image ended the node; one frame
    stamped 100 s ahead wedged it while diagnostics said OK; a 10 MB instruction was copied
    into every observation."""
    node = node_process(peer_factory, "rotvla_ros.nodes.camera_ingestion", "image_size:=32", "step_period:=0.1")
    images = {c: client.node.create_publisher(Image, f"/cameras/{c}/color/image_raw", SENSOR_QOS) for c in CAMERA_NAMES}
    robot_state = RobotStatePublisher(client.node)
    instruction = client.node.create_publisher(String, "/rotvla/instruction", LATCHED_QOS)
    observations = client.listen(Observation, "/rotvla/observation", OBSERVATION_QOS)
    diagnostics = client.listen(DiagnosticArray, "/diagnostics")
    assert client.spin_until(lambda: all(p.get_subscription_count() for p in images.values()), 30)

    def stream(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = client.node.get_clock().now().nanoseconds * 1e-9
            robot_state.publish(now)
            for camera, publisher in images.items():
                publisher.publish(frame(camera, now))
            client.spin_for(0.05)

    # Frames until the first observation: the node's observation publisher may discover our
    # subscription after the first frames (a loaded machine: CI's fresh clone), and frames
    # sent before that make observations nobody receives.
    deadline = time.monotonic() + 15.0
    while not observations and time.monotonic() < deadline:
        stream(0.5)
    assert observations, "".join(node.lines[-20:])

    def counts() -> dict:
        status = latest_diagnostic(diagnostics, "rotvla/camera_ingestion")
        return {kv.key: kv.value for kv in status.values} if status is not None else {}

    def refused(message, counter: str) -> None:
        """Sends ``message`` until the node's diagnostics count it under ``counter``: the sensor
        QoS is best effort and 5 deep, and a loaded machine (CI) loses some of a paced burst, so
        each message is resent until it is seen; one the node took as good never is."""
        before = int(counts().get(counter, 0))
        deadline = time.monotonic() + 10.0
        while int(counts().get(counter, 0)) <= before and time.monotonic() < deadline:
            images["head"].publish(message)
            client.spin_for(0.3)
            assert alive(node), "".join(node.lines[-30:])
        assert int(counts().get(counter, 0)) > before, f"{counter} not counted: {str(counts())[:2000]}"

    # Diagnostics come at 1 Hz: start from a report.
    assert client.spin_until(lambda: "head/malformed" in counts(), 5), str(counts())[:2000]
    whole = serialize_message(frame("head", 0.0))
    for cut in (8, 20, 40, len(whole) // 2, len(whole) - 64):  # (the last bytes may be padding)
        refused(whole[:cut], "head/malformed")  # truncated CDR
    refused(b"\x00\x01" * 13, "head/malformed")  # not CDR at all
    now = client.node.get_clock().now().nanoseconds * 1e-9
    refused(frame("head", now + 100.0), "head/future")  # a frame from the future
    instruction.publish(String(data="x" * 10_000_000))
    client.spin_for(0.5)
    assert alive(node), "".join(node.lines[-30:])
    before = len(observations)
    # Not wedged (a wedged node gives none): on the 2-core Xeon box this stream gave 4-11
    # observations in 2 s, before this session's changes as after, so 5 s for 8.
    stream(5.0)
    assert alive(node), "".join(node.lines[-30:])
    assert len(observations) - before >= 8
    assert all(len(o.instruction) < 1000 for o in observations[before:])

    assert client.spin_until(lambda: int(counts().get("refused_instructions", 0)) == 1, 5), str(counts())[:2000]
    statuses = [s for a in diagnostics for s in a.status if s.name == "rotvla/camera_ingestion"]
    assert any(s.level == DiagnosticStatus.ERROR and "future" in s.message for s in statuses), [
        s.message for s in statuses
    ]


# -- the policy node -------------------------------------------------------------------------


def bad_checkpoint(tmp_path, name: str, edit) -> str:
    target = tmp_path / name
    shutil.copytree(TINY, target)
    edit(target)
    return str(target)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def policy(client, peer_factory):
    node = node_process(
        peer_factory, "rotvla_ros.nodes.policy_node", f"checkpoint:={TINY}", "device:=cpu", "max_observation_age:=5.0"
    )
    chunks = client.listen(ActionChunk, "/rotvla/action_chunk")
    observations = client.node.create_publisher(Observation, "/rotvla/observation", OBSERVATION_QOS)
    assert client.spin_until(lambda: observations.get_subscription_count() > 0, 60), "".join(node.lines[-20:])

    def observe(stamp_offset: float = 0.0, encoding: str = "rgb8") -> Observation:
        now = client.node.get_clock().now().nanoseconds * 1e-9
        msg = Observation(camera_names=list(CAMERA_NAMES))
        for _camera in CAMERA_NAMES:
            image = fill_image(Image(), np.full((84, 84, 3), 90, np.uint8), encoding)
            image.header.stamp = to_time(now + stamp_offset)
            msg.images.append(image)
        msg.header.stamp = to_time(now + stamp_offset)
        observations.publish(msg)
        return msg

    return node, chunks, observe


def test_the_policy_node_refuses_bad_checkpoints_and_keeps_serving(client, policy, tmp_path):
    """Findings 2 and 3: three requests ended the node without a reply, two checkpoints that
    cannot serve were swapped in."""
    node, chunks, observe = policy
    cases = {
        "heads": lambda d: edit_json(d / "config.json", lambda c: c["model"]["expert"].update(num_heads=0)),
        "backbone": lambda d: (d / "backbone_config.json").write_text(json.dumps({"vision_config": 5})),
        "dt": lambda d: edit_json(d / "config.json", lambda c: c["model"].update(dt=0.0)),
        "std": lambda d: edit_json(d / "normalization.json", lambda c: c["action"].update(std=[1e30] * 20)),
        "missing": lambda d: (d / "model.safetensors").unlink(),
        "corrupt": lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 100),
        # Issue 30, finding 5: a 100 MB config.json stalled serving while it was parsed; 1,000
        # flow steps passed validation and served nothing for seconds.
        "huge_config": lambda d: edit_json(d / "config.json", lambda c: c.update(padding="x" * (2 << 20))),
        "flow_steps": lambda d: edit_json(d / "config.json", lambda c: c["model"]["flow"].update(num_steps=1000)),
        "horizon": lambda d: edit_json(d / "config.json", lambda c: c["model"].update(action_horizon=50_000)),
    }
    requests = [LoadCheckpoint.Request(path=bad_checkpoint(tmp_path, name, edit)) for name, edit in cases.items()]
    requests.append(LoadCheckpoint.Request(path=str(TINY), device="cuda"))  # no CUDA in this torch
    serving = None
    reasons = {
        "huge_config": "more than such a file holds",
        "flow_steps": "flow: steps",
        "horizon": "action_horizon",
    }
    for request in requests:
        reply = client.call(LoadCheckpoint, "/rotvla/load_checkpoint", request)
        assert alive(node), "".join(node.lines[-30:])
        assert not reply.success, (request.path, reply.message)
        assert reasons.get(Path(request.path).name, "") in reply.message, reply.message
        assert reply.checkpoint_id and len(reply.message) < 3000
        serving = serving or reply.checkpoint_id
        assert reply.checkpoint_id == serving  # the old model still serves
    chunks.clear()
    observe()
    assert client.spin_until(lambda: chunks, 30)
    assert chunks[-1].checkpoint_id == serving and to_seconds(chunks[-1].dt) == pytest.approx(0.1)


def test_the_policy_node_refuses_future_observations_huge_instructions_and_serves_bgr(client, policy):
    """Findings 9 (an observation stamped 100 s ahead was answered), 6 (a 10 MB instruction)
    and 12 (a bgr8 image failed inference with negative strides)."""
    node, chunks, observe = policy
    reply = client.call(SetInstruction, "/rotvla/set_instruction", SetInstruction.Request(instruction="x" * 10_000_000))
    assert not reply.success and alive(node)
    chunks.clear()
    observe(stamp_offset=100.0)
    client.spin_for(2.0)
    assert not chunks  # nothing for an observation from the future
    observe(encoding="bgr8")
    assert client.spin_until(lambda: chunks, 30), "".join(node.lines[-20:])
    assert alive(node)


# -- the executor ----------------------------------------------------------------------------


@pytest.fixture
def executor(client, peer_factory):
    # The test plays the policy.
    node = executor_process(peer_factory, "backend:=sim", "chunk_source:=robustness_client")
    statuses = client.listen(ExecutorStatus, "/rotvla/executor_status")
    chunks = client.node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)
    assert client.spin_until(lambda: statuses, 60), "".join(node.lines[-20:])
    return node, statuses, chunks


def chunk_message(client, horizon=8, names=NAMES, checkpoint_id="test", sequence=0) -> ActionChunk:
    from arx_r5_driver.configuration import HOME_JOINTS
    from arx_r5_driver.kinematics import ArmKinematics

    position, rotation = ArmKinematics().fk(np.array(HOME_JOINTS))
    row = np.r_[position, rotation[:, 0], rotation[:, 1], 0.04]
    msg = ActionChunk(horizon=horizon, action_names=list(names), checkpoint_id=checkpoint_id, sequence=sequence)
    msg.header.stamp = client.node.get_clock().now().to_msg()
    msg.dt = to_duration(0.05)
    msg.actions = (
        np.tile(np.r_[row, row], horizon).astype(np.float32).tolist()
        if len(names) == 20
        else [0.0] * (horizon * len(names))
    )
    return msg


def test_the_executor_bounds_what_it_echoes_and_refuses_chunks_that_would_stall_it(client, executor):
    """Findings 6 (100,000 unknown names / a 1 MB checkpoint id made every status megabytes)
    and 7 (a 50,000-step chunk stalled the control loop)."""
    node, statuses, chunks = executor
    states = client.listen(JointState, "/joint_states", SENSOR_QOS)
    chunks.publish(chunk_message(client, horizon=2, names=[f"unknown/{k}" for k in range(100_000)]))
    chunks.publish(chunk_message(client, checkpoint_id="c" * 1_000_000, sequence=1))
    chunks.publish(chunk_message(client, horizon=50_000, sequence=2))
    client.spin_until(lambda: statuses and statuses[-1].chunks_rejected >= 3, 30)
    statuses.clear()
    states.clear()
    client.spin_for(2.0)
    assert alive(node), "".join(node.lines[-30:])
    assert statuses and statuses[-1].chunks_rejected == 3 and statuses[-1].chunks_accepted == 0
    assert max(len(serialize_message(s)) for s in statuses) < 4096
    stamps = [to_seconds(s.header.stamp) for s in states]
    assert len(stamps) > 50 and max(np.diff(stamps)) < 0.1  # the control loop never stalled


def test_no_peer_can_change_the_executors_parameters_at_run_time(client, executor):
    """Issue 30, finding 1: SetParameters use_sim_time=true from a peer was accepted by the
    robot's (wall-clock) executor: its control loop froze, then ran on the peer's /clock. Every
    parameter is now fixed while the node runs; the refusal says why and nothing changes."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically

    node, statuses, _ = executor
    states = client.listen(JointState, "/joint_states", SENSOR_QOS)
    sim_time = ParameterMsg(
        name="use_sim_time", value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
    )
    faster = ParameterMsg(
        name="max_cartesian_speed", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=5.0)
    )
    results = client.call(
        SetParameters, "/arx_r5_executor/set_parameters", SetParameters.Request(parameters=[sim_time, faster])
    )
    assert not results.results[0].successful and "fixed while the node runs" in results.results[0].reason
    assert not results.results[1].successful  # read-only already: refused by rclpy itself
    atomic = client.call(
        SetParametersAtomically,
        "/arx_r5_executor/set_parameters_atomically",
        SetParametersAtomically.Request(parameters=[sim_time]),
    )
    assert not atomic.result.successful
    values = client.call(
        GetParameters,
        "/arx_r5_executor/get_parameters",
        GetParameters.Request(names=["use_sim_time", "max_cartesian_speed"]),
    ).values
    assert (values[0].bool_value, values[1].double_value) == (False, 0.5)
    states.clear()
    client.spin_for(1.0)
    stamps = [to_seconds(s.header.stamp) for s in states]
    assert len(stamps) > 50 and max(np.diff(stamps)) < 0.1  # the control loop runs on, on the wall clock
    assert abs(stamps[-1] - time.time()) < 1.0
    assert alive(node), "".join(node.lines[-30:])


def test_an_oversized_chunk_is_refused_unread_and_the_control_loop_runs_on(client, executor):
    """Issue 30, finding 6: a 40 MB chunk and one with 10^6 action names were decoded before
    being refused, holding the 200 Hz loop for 158 ms and 80 ms (a 0.23 s joint-state gap)."""
    node, statuses, chunks = executor
    huge = chunk_message(client, horizon=2)
    huge.actions = np.zeros(10_000_000, np.float32).tolist()  # 40 MB
    many_names = chunk_message(client, horizon=2, names=[f"n{k}" for k in range(1_000_000)], sequence=1)
    # A deep history: this process does not spin while it serializes 40 MB, and every joint state
    # the executor published meanwhile must still be here to show there was no gap.
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
    states = client.listen(JointState, "/joint_states", deep)
    client.spin_for(0.5)
    chunks.publish(huge)
    chunks.publish(many_names)
    assert client.spin_until(lambda: statuses and statuses[-1].chunks_rejected >= 2, 60)
    assert "too_large" in statuses[-1].last_rejection_reason and "not decoded" in statuses[-1].last_rejection_reason
    client.spin_for(0.5)
    assert alive(node), "".join(node.lines[-30:])
    stamps = np.array([to_seconds(s.header.stamp) for s in states])
    # The executor refused both unread (before: decoded, a 158 ms / 80 ms stall). What remains
    # (~0.1 s on the 2-core box with this process serializing 40 MB beside it) is the DDS
    # transport receiving 40 MB, not Python; issue 31's isolated control loop is its answer.
    assert len(stamps) > 100 and np.diff(stamps).max() < 0.2, np.diff(stamps).max()


@pytest.mark.timeout(180)
def test_a_full_disk_ends_the_episode_not_the_recorder_and_what_was_written_converts(client, peer_factory, tmp_path):
    """Issue 30, finding 4: on a full disk the recorder died (exit 1), the stop service was gone
    and its .partial MCAP could not be read ("File end magic is invalid"). A 3 MB tmpfs fills
    within seconds of recording three cameras."""
    import subprocess

    from rotvla_msgs.srv import StartEpisode, StopEpisode
    from rotvla_ros.data.convert import ConversionConfig, convert

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        node = node_process(peer_factory, "rotvla_ros.nodes.episode_recorder", f"output_dir:={disk}")
        diagnostics = client.listen(DiagnosticArray, "/diagnostics")
        cameras = {
            c: client.node.create_publisher(Image, f"/cameras/{c}/color/image_raw", SENSOR_QOS) for c in CAMERA_NAMES
        }
        state = RobotStatePublisher(client.node)
        request = StartEpisode.Request(task="block_to_plate", instruction="put the block on the plate")
        assert client.call(StartEpisode, "/rotvla/recorder/start", request).success

        def failed() -> bool:
            status = latest_diagnostic(diagnostics, "rotvla/episode_recorder")
            return status is not None and status.level == DiagnosticStatus.ERROR

        deadline = time.monotonic() + 60
        while not failed() and time.monotonic() < deadline:
            now = time.time()
            for camera, publisher in cameras.items():
                image = frame(camera, now, size=(84, 84))
                image.data = np.random.default_rng(int(now * 1e3)).integers(0, 255, len(image.data), np.uint8).tobytes()
                publisher.publish(image)
            state.publish(now)
            client.spin_for(0.05)
        assert failed(), "the disk never filled"
        assert alive(node), "".join(node.lines[-30:])
        reply = client.call(StopEpisode, "/rotvla/recorder/stop", StopEpisode.Request(task_success=True))
        assert not reply.success and "write failed" in reply.message and "No space left" in reply.message, reply.message
        (episode,) = [p for p in disk.iterdir() if (p / "episode.json").exists()]
        meta = json.loads((episode / "episode.json").read_text())
        assert meta["complete"] is False and meta["success"] is False and "No space left" in meta["error"]
        # This test's own publishing is not paced like cameras (and drops frames while the disk
        # fills): a wide gap tolerance, the point being that the damaged bag reads at all.
        dataset = convert([episode], tmp_path / "dataset", ConversionConfig(fps=10, max_gap=2.0), progress=False)
        assert dataset["total_episodes"] == 1 and dataset["total_frames"] >= 10
        assert alive(node) and client.call(StopEpisode, "/rotvla/recorder/stop", StopEpisode.Request()).message == (
            "no episode is being recorded"
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.timeout(180)
def test_a_flood_from_another_peer_neither_steers_the_arms_nor_starves_the_policy(client, executor, peer_factory):
    """Issue 30, finding 2: 5,000 chunks a second from another participant left 30 of the
    policy's 211 chunks accepted and stopped the arms 10 times; any peer's well-formed chunk was
    executed. Only the declared chunk_source's chunks are read now (this test's node plays the
    policy); the flood's are refused unread, and the policy's keep being executed."""
    node, statuses, chunks = executor
    flooder = peer_factory(REPO_ROOT / "tests" / "peers" / "chunk_flooder.py", "5000", "8")
    flooder.wait_ready(timeout=60)
    sent = 0
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:  # the policy: a chunk every 0.2 s
        sent += 1
        chunks.publish(chunk_message(client, horizon=8, sequence=sent))
        client.spin_for(0.2)
    client.spin_until(lambda: any("sent" in line for line in flooder.lines), 30)
    client.spin_for(1.0)
    assert alive(node), "".join(node.lines[-30:])
    status = statuses[-1]
    flooded = int(next(line for line in flooder.lines if line.startswith("sent")).split()[1])
    assert flooded > 10_000, flooded  # it did flood
    # The policy is not starved out (before: 30 of 211 taken, 14%). Not all of its chunks make it
    # on this 2-core box, where the flooder takes a core and the executor cannot take 5,000 a
    # second off its queue: 10/27 and 21/29 measured, the rest pushed out unread. Issue 30 keeps
    # that open (DDS-level filtering or an isolated loop, issue 31).
    assert status.chunks_accepted >= 0.25 * sent, (status.chunks_accepted, sent)
    assert status.active_checkpoint_id == "test"  # nothing of the flood's was ever in force
    # Refused as not the policy's (what the executor did not take off its queue before newer ones
    # pushed it out was never read either).
    assert status.chunks_rejected > 1000 and status.last_rejection_reason.startswith("unknown_source")


def test_a_sender_whose_name_is_not_known_yet_never_holds_up_the_executor(rclpy_context):
    """Issue 30: the executor waited in its one spin thread, up to 0.3 s per new sender, for a
    publisher's node name (discovered after the publisher), and an e-stop call waited behind
    it: a peer making publishers could keep the e-stop waiting. Now the new sender's chunk is
    held and the thread goes on; the chunk is read once its sender turns out to be the policy,
    and refused when it stays nameless or is another node."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from arx_r5_driver.executor_node import NAME_WAIT, UNKNOWN_NODE, ExecutorNode

    node = ExecutorNode(
        cli_args=["--ros-args", "--params-file", str(REPO_ROOT / "config" / "robot.yaml")],
        parameter_overrides=[Parameter("backend", value="sim"), Parameter("chunk_source", value="policy")],
    )
    spinner = SingleThreadedExecutor()
    spinner.add_node(node)
    names: dict[bytes, str] = {}

    def ask_graph():  # the graph as discovery has it so far
        node._senders = dict(names)
        node._trusted = {gid for gid, name in names.items() if name == "/policy"}

    node._ask_graph = ask_graph
    policy, stranger = b"\x01" * 16, b"\x02" * 16
    try:
        msg = ActionChunk(horizon=8, action_names=list(NAMES), checkpoint_id="test", sequence=1)
        from arx_r5_driver.configuration import HOME_JOINTS
        from arx_r5_driver.kinematics import ArmKinematics

        position, rotation = ArmKinematics().fk(np.array(HOME_JOINTS))
        row = np.r_[position, rotation[:, 0], rotation[:, 1], 0.04]
        msg.dt = to_duration(0.05)
        msg.actions = np.tile(np.r_[row, row], 8).astype(np.float32).tolist()
        for gid in (policy, stranger):
            names[gid] = f"/_NODE_NAMESPACE_UNKNOWN_/{UNKNOWN_NODE}"
            msg.header.stamp = node.get_clock().now().to_msg()
            started = time.perf_counter()
            node._on_serialized_chunk(serialize_message(msg), {"publisher_gid": {"data": gid}})
            assert time.perf_counter() - started < 0.05  # it was 0.3 s, in the thread that answers the e-stop
            time.sleep(0.06)  # the graph is asked at most every 50 ms
        assert set(node._held) == {policy, stranger} and node.controller.counters.chunks_accepted == 0
        names[policy] = "/policy"  # discovery catches up with the policy's name, not the stranger's
        deadline = time.monotonic() + 2 * NAME_WAIT
        while time.monotonic() < deadline and node._held:
            spinner.spin_once(timeout_sec=0.02)
        counters = node.controller.counters
        assert not node._held and counters.chunks_accepted == 1, counters
        assert counters.rejections.get("unknown_source") == 1, counters.rejections
    finally:
        spinner.shutdown()
        node.destroy_node()
