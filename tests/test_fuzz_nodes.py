"""Seeded fuzzing of every node over DDS, each node in its own process: thousands of
malformed, truncated, oversized and adversarial messages and service requests. Afterwards
the node is still up, has counted what it refused, and does its job on good input; the
executor's arms never left their limits."""

import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT

pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from test_robustness_nodes import Client, RobotStatePublisher, alive, frame  # noqa: E402

from arx_r5_driver.configuration import HOME_JOINTS  # noqa: E402
from arx_r5_driver.kinematics import R5_JOINT_LIMITS, ArmKinematics  # noqa: E402
from rotvla_common.action_space import CAMERA_NAMES  # noqa: E402
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES
from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS, to_duration, to_seconds, to_time  # noqa: E402
from rotvla_msgs.msg import ActionChunk, ExecutorStatus, Observation  # noqa: E402
from rotvla_msgs.srv import (  # noqa: E402
    LoadCheckpoint,
    ResetSimulation,
    SetControlSource,
    SetInstruction,
    StartEpisode,
    StopEpisode,
)
from rotvla_ros.ingest.images import fill_image  # noqa: E402
from rotvla_ros.nodes.common import OBSERVATION_QOS  # noqa: E402

ROBOT = str(REPO_ROOT / "config" / "robot.yaml")
SIM = str(REPO_ROOT / "config" / "sim.yaml")
TINY = str(REPO_ROOT / "models" / "tiny-random")
ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "16UC1", "", "yuv422", "x" * 300]


@pytest.fixture
def client(rclpy_context):
    c = Client("fuzzer")
    yield c
    c.close()


def start(peer_factory, *args):
    return peer_factory(sys.executable, "-m", *args)


def random_image(rng) -> Image:
    """An Image whose fields disagree with each other in every way."""
    msg = Image(
        height=int(rng.choice([0, 1, 7, 48, 480, 2**31 - 1])),
        width=int(rng.choice([0, 1, 9, 64, 640])),
        encoding=str(rng.choice(ENCODINGS)),
        step=int(rng.choice([0, 3, 192, 1920, 2**31 - 1])),
        is_bigendian=int(rng.integers(0, 2)),
    )
    msg.data = rng.integers(0, 256, int(rng.choice([0, 1, 100, 9216, 100_000]))).astype(np.uint8).tobytes()
    msg.header.stamp = to_time(float(rng.choice([0.0, 1e9, 1.0, rng.uniform(0, 2e9)])))
    return msg


def random_joint_state(rng) -> JointState:
    names = [
        str(rng.choice(["left_gripper", "right_gripper", "left_joint1", "", "x" * 1000]))
        for _ in range(rng.integers(0, 5))
    ]
    positions = rng.choice([np.nan, np.inf, -1e30, 0.04, 1.0], size=int(rng.integers(0, 6))).tolist()
    msg = JointState(name=names, position=positions)
    msg.header.stamp = to_time(float(rng.uniform(0, 2e9)))
    return msg


def random_pose(rng) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = to_time(float(rng.uniform(0, 2e9)))
    msg.header.frame_id = str(rng.choice(["left_base_link", "", "x" * 1000]))
    values = rng.choice([np.nan, np.inf, -1e30, 0.0, 1.0], size=7)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = map(float, values)
    return msg


def test_fuzz_camera_ingestion(client, peer_factory):
    node = start(peer_factory, "rotvla_ros.nodes.camera_ingestion", "--ros-args", "-p", "image_size:=32")
    images = {c: client.node.create_publisher(Image, f"/cameras/{c}/color/image_raw", SENSOR_QOS) for c in CAMERA_NAMES}
    robot_state = RobotStatePublisher(client.node)
    joints = robot_state.joints
    observations = client.listen(Observation, "/rotvla/observation", OBSERVATION_QOS)
    assert client.spin_until(lambda: all(p.get_subscription_count() for p in images.values()), 30)
    rng = np.random.default_rng(0)
    for k in range(2000):
        camera = CAMERA_NAMES[k % 3]
        kind = rng.integers(0, 4)
        if kind == 3:
            robot_state.poses[str(rng.choice(["left", "right"]))].publish(random_pose(rng))
        elif kind == 0:
            raw = serialize_message(frame(camera, 0.0))
            images[camera].publish(raw[: int(rng.integers(0, len(raw)))])  # truncated
        elif kind == 1:
            images[camera].publish(random_image(rng))
        else:
            joints.publish(random_joint_state(rng))
        if k % 50 == 0:
            client.spin_for(0.01)
    client.spin_for(0.5)
    assert alive(node), "".join(node.lines[-30:])
    observations.clear()
    # Good frames until ten observations came (~1 s at 10 Hz); a wedged node never gets there.
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and len(observations) < 10:
        now = client.node.get_clock().now().nanoseconds * 1e-9
        robot_state.publish(now)
        for camera, publisher in images.items():
            publisher.publish(frame(camera, now))
        client.spin_for(0.05)
    assert alive(node) and len(observations) >= 10, "".join(node.lines[-30:])


def random_chunk(rng, client) -> ActionChunk:
    horizon = int(rng.choice([0, 1, 8, 30, 1001, 5000]))
    names = list(NAMES)
    mutation = rng.integers(0, 5)
    if mutation == 1:
        names = names[::-1]
    elif mutation == 2:
        names = names[: int(rng.integers(0, 20))]
    elif mutation == 3:
        names = names + ["extra"]
    size = int(rng.choice([horizon * len(names), horizon * 20, int(rng.integers(0, 2000))]))
    values = rng.choice([0.3, -0.3, 0.0, 1.0, 1e30, np.nan, np.inf, 0.08], size=size)
    if rng.random() < 0.5 and horizon * 20 == size and horizon:  # near-valid: a pose somewhere, maybe far
        position, rotation = ArmKinematics().fk(np.array(HOME_JOINTS))
        row = np.r_[position + rng.normal(0, 0.3, 3), rotation[:, 0], rotation[:, 1], rng.uniform(-0.1, 0.2)]
        values = np.tile(np.r_[row, row], horizon)
    msg = ActionChunk(
        horizon=horizon,
        action_names=names,
        actions=values.astype(np.float32).tolist(),
        checkpoint_id="f" * int(rng.choice([0, 10, 300])),
        sequence=int(rng.integers(0, 2**63)),
    )
    now = client.node.get_clock().now().nanoseconds * 1e-9
    msg.header.stamp = to_time(max(0.0, now + float(rng.choice([0.0, -0.05, -10.0, 0.5, 1e6]))))
    msg.dt = to_duration(float(rng.choice([0.05, 0.1, 0.0, 2.0, 1e-9])))
    return msg


def test_fuzz_executor_never_breaks_a_limit(client, peer_factory):
    node = start(
        peer_factory,
        "arx_r5_driver.executor_node",
        "--ros-args",
        "--params-file",
        ROBOT,
        "-p",
        "arx_r5_executor:backend:=sim",
        "-p",
        "arx_r5_executor:chunk_source:=fuzzer",  # the fuzzer plays the policy: its chunks are read
    )
    statuses = client.listen(ExecutorStatus, "/rotvla/executor_status")
    states = client.listen(JointState, "/joint_states", SENSOR_QOS)
    chunks = client.node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)
    assert client.spin_until(lambda: statuses, 60), "".join(node.lines[-20:])
    # Who drives, switched at random among the chunks (issue 28's run-time takeover): valid
    # sources, garbage, a 10,000-character name.
    switch = client.node.create_client(SetControlSource, "/rotvla/set_control_source")
    assert switch.wait_for_service(timeout_sec=30)
    replies = []
    rng = np.random.default_rng(1)
    sent = 1500
    for k in range(sent):
        chunks.publish(random_chunk(rng, client))
        if k % 30 == 0:
            source = str(rng.choice(["policy", "teleop", "home", "", "Teleop", "\x00", "x" * 10_000]))
            replies.append(switch.call_async(SetControlSource.Request(source=source)))
        if k % 10 == 0:
            client.spin_for(0.01)  # ~10 chunks every 10 ms: the control loop must hold
    client.spin_for(2.0)
    assert alive(node), "".join(node.lines[-30:])
    assert client.spin_until(lambda: all(r.done() for r in replies), 30)
    answers = [r.result() for r in replies]
    assert any(a.success for a in answers) and any(not a.success for a in answers)
    assert max(len(a.message) for a in answers) < 300  # a name is echoed bounded
    last = statuses[-1]
    assert last.chunks_rejected > 500 and last.chunks_rejected + last.chunks_accepted <= sent
    lower = np.array([R5_JOINT_LIMITS[j][0] for j in sorted(R5_JOINT_LIMITS)])
    upper = np.array([R5_JOINT_LIMITS[j][1] for j in sorted(R5_JOINT_LIMITS)])
    positions = np.array([s.position for s in states])  # (T, 14): per arm 6 joints and the gripper
    for arm in range(2):
        joints = positions[:, 7 * arm : 7 * arm + 6]
        assert np.all(joints >= lower - 1e-6) and np.all(joints <= upper + 1e-6)
    stamps = np.array([to_seconds(s.header.stamp) for s in states])
    assert len(stamps) > 100 and np.diff(stamps).max() < 0.1  # never stalled


def random_observation(rng, client) -> Observation:
    cameras = list(rng.choice(list(CAMERA_NAMES) + ["", "x" * 500], size=int(rng.integers(0, 5))))
    msg = Observation(camera_names=cameras, instruction="i" * int(rng.choice([0, 10, 100_000])))
    for _ in range(int(rng.integers(0, 5))):
        if rng.random() < 0.5:
            msg.images.append(random_image(rng))
        else:
            side = int(rng.choice([1, 8, 84, 200]))
            msg.images.append(
                fill_image(
                    Image(),
                    rng.integers(0, 256, (side, side, 3)).astype(np.uint8),
                    str(rng.choice(["rgb8", "bgr8", "mono8"])),
                )
            )
    now = client.node.get_clock().now().nanoseconds * 1e-9
    msg.header.stamp = to_time(max(0.0, now + float(rng.choice([0.0, -100.0, 100.0]))))
    msg.joint_state = random_joint_state(rng)
    return msg


def test_fuzz_policy_node(client, peer_factory, tmp_path):
    node = start(
        peer_factory,
        "rotvla_ros.nodes.policy_node",
        "--ros-args",
        "-p",
        f"checkpoint:={TINY}",
        "-p",
        "device:=cpu",
        "-p",
        "max_observation_age:=5.0",
    )
    chunks = client.listen(ActionChunk, "/rotvla/action_chunk")
    observations = client.node.create_publisher(Observation, "/rotvla/observation", OBSERVATION_QOS)
    assert client.spin_until(lambda: observations.get_subscription_count() > 0, 60)
    rng = np.random.default_rng(2)
    (tmp_path / "file").write_text("not a checkpoint")
    paths = ["", "/", "/nonexistent", str(tmp_path / "file"), str(tmp_path), "x" * 5000, TINY + "/config.json"]
    for k in range(1000):
        observations.publish(random_observation(rng, client))
        if k % 100 == 0:
            reply = client.call(
                LoadCheckpoint,
                "/rotvla/load_checkpoint",
                LoadCheckpoint.Request(path=str(rng.choice(paths)), device=str(rng.choice(["", "cpu", "gpu9"]))),
            )
            assert not reply.success
            client.call(
                SetInstruction,
                "/rotvla/set_instruction",
                SetInstruction.Request(instruction="put the block on the plate" * int(rng.choice([1, 10_000]))),
            )
        if k % 20 == 0:
            client.spin_for(0.01)
    assert alive(node), "".join(node.lines[-30:])
    chunks.clear()
    good = Observation(camera_names=list(CAMERA_NAMES))
    for _camera in CAMERA_NAMES:
        good.images.append(fill_image(Image(), np.full((84, 84, 3), 90, np.uint8), "rgb8"))
    deadline = time.monotonic() + 30
    while not chunks and time.monotonic() < deadline:
        good.header.stamp = client.node.get_clock().now().to_msg()
        observations.publish(good)
        client.spin_for(0.3)
    assert chunks and alive(node), "".join(node.lines[-30:])


def test_fuzz_sim_node_and_its_reset(client, peer_factory):
    node = start(
        peer_factory,
        "rotvla_ros.nodes.sim_node",
        "--ros-args",
        "--params-file",
        ROBOT,
        "--params-file",
        SIM,
        "-p",
        "real_time_factor:=0.0",
    )
    commands = client.node.create_publisher(JointState, "/sim/joint_commands", RELIABLE_QOS)
    states = client.listen(JointState, "/sim/joint_states", SENSOR_QOS)
    assert client.spin_until(lambda: states, 60), "".join(node.lines[-20:])
    rng = np.random.default_rng(3)
    for k in range(1500):
        commands.publish(random_joint_state(rng))
        if k % 300 == 0:
            task = str(rng.choice(["", "cup_stacking", "block_to_plate", "stack cups", "x" * 5000, "\u00e9\n"]))
            reply = client.call(
                ResetSimulation,
                "/sim/reset",
                ResetSimulation.Request(seed=int(rng.integers(-(2**63), 2**63)), task=task),
            )
            assert reply.success or "reset failed" in reply.message or "reset refused" in reply.message
        if k % 150 == 75:  # paused and resumed at random, resets in between (rotvla_dagger's pause)
            reply = client.call(SetBool, "/sim/pause", SetBool.Request(data=bool(rng.random() < 0.5)))
            assert reply.success, reply.message
        if k % 20 == 0:
            client.spin_for(0.01)
    assert alive(node), "".join(node.lines[-30:])
    assert client.call(SetBool, "/sim/pause", SetBool.Request(data=False)).success
    states.clear()
    assert client.spin_until(lambda: len(states) > 10, 10)
    assert all(np.isfinite(s.position).all() for s in states)


def test_a_reset_to_another_task_switches_the_scene_and_the_policys_instruction(client, peer_factory):
    """A multi-task checkpoint switched live in simulation: ``rotvla_ctl reset --task`` draws the
    other task's scene and gives the policy its instruction; an unknown task is refused and
    leaves the scene as it was."""
    from std_msgs.msg import String

    from rotvla_common.ros import LATCHED_QOS
    from rotvla_ros.sim.tasks import TASKS

    start(peer_factory, "rotvla_ros.nodes.sim_node", "--ros-args", "--params-file", ROBOT, "--params-file", SIM)
    start(peer_factory, "rotvla_ros.nodes.policy_node", "--ros-args", "-p", f"checkpoint:={TINY}", "-p", "device:=cpu")
    instructions = client.listen(String, "/rotvla/instruction", LATCHED_QOS)
    assert client.spin_until(lambda: instructions, 120)

    def ctl(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rotvla_ros.nodes.rotvla_ctl", "reset", *arguments],
            capture_output=True,
            text=True,
            timeout=120,
        )

    cups = TASKS["cup_stacking"].instruction
    done = ctl("--task", "cup_stacking", "--seed", "3")
    assert done.returncode == 0 and "cup_stacking seed 3" in done.stdout, done.stdout + done.stderr
    assert client.spin_until(lambda: instructions[-1].data == cups, 10), instructions[-1].data
    refused = ctl("--task", "stack_cups")
    assert refused.returncode == 1 and "is not one of" in refused.stdout, refused.stdout + refused.stderr
    reply = client.call(ResetSimulation, "/sim/reset", ResetSimulation.Request(seed=4))
    assert reply.success and (reply.task, reply.instruction) == ("cup_stacking", cups)


def test_the_sim_node_moves_an_arm_to_its_joint_command(client, peer_factory):
    # The one path every simulated run depends on, in seconds: a joint command on the sim's
    # topic reaches the simulated arm (the stack tests see a break here only after minutes).
    from arx_r5_driver.kinematics import joint_names

    node = start(peer_factory, "rotvla_ros.nodes.sim_node", "--ros-args", "--params-file", ROBOT, "--params-file", SIM)
    commands = client.node.create_publisher(JointState, "/sim/joint_commands", RELIABLE_QOS)
    states = client.listen(JointState, "/sim/joint_states", SENSOR_QOS)
    assert client.spin_until(lambda: states, 60), "".join(node.lines[-20:])
    names = joint_names("left")
    start_position = dict(zip(states[-1].name, states[-1].position))
    target = [start_position[n] for n in names]
    target[0] += 0.2  # rad, the base joint
    command = JointState(name=names, position=target)

    def reached() -> bool:
        command.header.stamp = states[-1].header.stamp  # the sim's own time
        commands.publish(command)
        now = dict(zip(states[-1].name, states[-1].position))
        return abs(now[names[0]] - target[0]) < 0.01

    assert client.spin_until(reached, 20), f"{names[0]} at {dict(zip(states[-1].name, states[-1].position))[names[0]]}"
    assert alive(node), "".join(node.lines[-30:])
    # Between episodes, `rotvla_ctl reset` resets a simulated cell to a seed (the robot's arms it homes).
    done = subprocess.run(
        [sys.executable, "-m", "rotvla_ros.nodes.rotvla_ctl", "reset", "--seed", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "seed 5" in done.stdout, done.stdout + done.stderr


def test_fuzz_episode_recorder(client, peer_factory, tmp_path):
    node = start(peer_factory, "rotvla_ros.nodes.episode_recorder", "--ros-args", "-p", f"output_dir:={tmp_path}")
    rng = np.random.default_rng(4)
    images = client.node.create_publisher(Image, "/cameras/head/color/image_raw", SENSOR_QOS)
    for _k in range(300):
        choice = rng.integers(0, 4)
        if choice == 0:
            client.call(
                StartEpisode,
                "/rotvla/recorder/start",
                StartEpisode.Request(
                    task=str(rng.choice(["t", "../../escape", "a/b", "x" * 300, ""])),
                    instruction="i" * int(rng.choice([0, 100_000])),
                ),
            )
        elif choice == 1:
            client.call(
                StopEpisode,
                "/rotvla/recorder/stop",
                StopEpisode.Request(task_success=bool(rng.integers(0, 2)), notes="n" * int(rng.choice([0, 100_000]))),
            )
        elif choice == 2:
            client.call(Trigger, "/rotvla/recorder/discard", Trigger.Request())
        else:
            images.publish(random_image(rng))
    assert alive(node), "".join(node.lines[-30:])
    assert all(path.resolve().is_relative_to(tmp_path.resolve()) for path in tmp_path.rglob("*"))
    assert not (tmp_path.parent / "escape").exists()
