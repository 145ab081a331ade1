"""The executor node in its own process over DDS, on simulated arms and on sim time (/clock
published by the test): chunks move the arms and are traced in ExecutorStatus, joint states and EEF poses
are published, rejections carry their reason to the status and /diagnostics, e-stop and
resume are services, the watchdog holds."""

import threading
import time

import numpy as np
import pytest

from conftest import executor_process, wait_for

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from arx_r5_driver.executor_node import HOME_JOINTS  # noqa: E402
from arx_r5_driver.kinematics import ArmKinematics  # noqa: E402
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES  # noqa: E402
from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS, to_duration, to_time  # noqa: E402
from rotvla_msgs.msg import ActionChunk, ExecutorStatus  # noqa: E402

HOME = np.array(HOME_JOINTS)
T0 = 1000.0  # sim time at the start


class SimWorld:
    """The test's side: publishes /clock (a sim-time thread), chunks, calls services, records."""

    def __init__(self):
        self.node = Node("executor_test_world")
        self.clock_publisher = self.node.create_publisher(Clock, "/clock", 10)
        self.chunk_publisher = self.node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)
        self.statuses, self.joint_states, self.poses, self.diagnostics = [], [], [], []
        self.node.create_subscription(ExecutorStatus, "/rotvla/executor_status", self.statuses.append, RELIABLE_QOS)
        self.node.create_subscription(JointState, "/joint_states", self.joint_states.append, SENSOR_QOS)
        self.node.create_subscription(PoseStamped, "/rotvla/eef_pose/left", self.poses.append, SENSOR_QOS)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if s.name == "rotvla/executor"),
            50,
        )
        self.estop = self.node.create_client(Trigger, "/rotvla/estop")
        self.resume = self.node.create_client(Trigger, "/rotvla/resume")
        self.sim_time = T0
        self._stop = threading.Event()
        # A SingleThreadedExecutor: the MultiThreadedExecutor's cost per callback starves
        # the clock thread on 2 cores at these message rates.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._threads = [
            threading.Thread(target=self._spin, daemon=True),
            threading.Thread(target=self._tick, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _tick(self):
        # Sim time advances with wall time, published every 5 ms like a 200 Hz simulation.
        while not self._stop.is_set():
            self.sim_time += 0.005
            self.clock_publisher.publish(Clock(clock=to_time(self.sim_time)))
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()

    def chunk(self, stamp, offsets, sequence, dt=0.05, corrupt=None, gripper=0.04):
        kinematics = ArmKinematics()
        position, rotation = kinematics.fk(HOME)
        row = lambda off: np.r_[position + off, rotation[:, 0], rotation[:, 1], gripper]  # noqa: E731
        actions = np.array([np.r_[row(off), row(off)] for off in offsets], dtype=np.float32)
        msg = ActionChunk(sequence=sequence, checkpoint_id="test-ckpt", horizon=len(offsets), action_names=list(NAMES))
        msg.header.stamp = to_time(stamp)
        msg.dt = to_duration(dt)
        msg.actions = actions.ravel().tolist()
        if corrupt:
            corrupt(msg)
        self.chunk_publisher.publish(msg)
        return msg

    def call(self, client):
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done, 10)
        return future.result()

    def latest_status(self) -> ExecutorStatus | None:
        return self.statuses[-1] if self.statuses else None


@pytest.fixture
def world(request, rclpy_context, peer_factory):
    world = SimWorld()
    params = [
        "use_sim_time:=true",
        "backend:=sim",
        "watchdog_timeout:=0.6",
        "publish_divisor:=10",
        "chunk_source:=executor_test_world",  # this test's node plays the policy
        *getattr(request, "param", []),
    ]
    executor = executor_process(peer_factory, *params)
    try:
        assert wait_for(lambda: world.latest_status() is not None, 30), f"no ExecutorStatus: {''.join(executor.lines)}"
        yield world
    finally:
        world.stop()
        assert executor.stop() == 0, "".join(executor.lines[-30:])


def test_chunks_move_the_arms_on_sim_time_and_state_is_published(world):
    status = world.latest_status()
    assert status.mode == ExecutorStatus.MODE_IDLE and status.header.stamp.sec >= int(T0)
    # Joint states: both arms and grippers, at the home pose; the EEF pose in the base frame.
    state = world.joint_states[-1]
    assert state.name[:7] == [f"left_joint{i}" for i in range(1, 7)] + ["left_gripper"] and len(state.name) == 14
    assert np.allclose(state.position[:6], HOME, atol=1e-6)
    pose = world.poses[-1]
    position, rotation = ArmKinematics().fk(HOME)
    assert pose.header.frame_id == "left_base_link"
    assert np.allclose([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z], position, atol=1e-6)
    quaternion = [pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w]
    assert (Rotation.from_quat(quaternion).inv() * Rotation.from_matrix(rotation)).magnitude() < 1e-6

    # A chunk moving 6 cm forward over 0.5 s, stamped now.
    horizon = 11
    offsets = np.c_[np.linspace(0, 0.06, horizon), np.zeros((horizon, 2))]
    stamp = world.sim_time
    world.chunk(stamp, offsets, sequence=42, gripper=0.0)  # (the sim grippers start closed)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_EXECUTING, 10)
    assert world.latest_status().active_chunk_sequence == 42
    assert world.latest_status().active_checkpoint_id == "test-ckpt"
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_HOLDING, 20)
    status = world.latest_status()
    assert status.chunks_accepted == 1 and status.chunks_rejected == 0
    # 12 cm/s is well inside every cap: no cycle was limited. (On sim time the clock moves in
    # 5 ms jumps; a cycle whose clock jumped while it computed used to cap the next one over
    # ~0 s and hold the arm: a joint_speed event in a third of the cycles.)
    assert status.limit_events == 0, sorted({hit for s in world.statuses for hit in s.limits_hit})
    assert (
        8 <= status.executed_steps <= horizon
    )  # step i is due at stamp + (i + 1) dt: all still due on a prompt arrival
    # The arm got there (the sim arm's first-order lag settles within a few tau).
    assert wait_for(
        lambda: (
            np.linalg.norm(
                [world.poses[-1].pose.position.x - position[0] - 0.06, world.poses[-1].pose.position.z - position[2]]
            )
            < 0.003
        ),
        10,
    )
    stamps = [s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in world.joint_states[-20:]]
    assert all(b > a for a, b in zip(stamps, stamps[1:])) and stamps[-1] > stamp  # sim time, increasing


def test_rejections_reach_the_status_and_diagnostics_and_e_stop_holds_until_resume(world):
    def add_nan(msg):
        msg.actions[25] = float("nan")

    horizon = 10
    offsets = np.c_[np.linspace(0, 0.03, horizon), np.zeros((horizon, 2))]
    world.chunk(world.sim_time, offsets, sequence=1, corrupt=add_nan)
    assert wait_for(lambda: world.latest_status().chunks_rejected == 1, 10)
    status = world.latest_status()
    assert status.last_rejection_reason.startswith("nan_or_inf") and status.mode == ExecutorStatus.MODE_IDLE
    assert wait_for(lambda: any("nan_or_inf" in d.message for d in world.diagnostics), 5)

    world.chunk(world.sim_time + 5.0, offsets, sequence=2)  # from the future
    assert wait_for(lambda: world.latest_status().last_rejection_reason.startswith("future_stamp"), 10)

    def truncate(msg):
        msg.actions = msg.actions[:-1]

    world.chunk(world.sim_time, offsets, sequence=3, corrupt=truncate)
    assert wait_for(lambda: world.latest_status().last_rejection_reason.startswith("wrong_size"), 10)

    response = world.call(world.estop)
    assert response.success
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_ESTOP, 10)
    before = np.array(world.joint_states[-1].position)
    world.chunk(world.sim_time, offsets, sequence=4)
    assert wait_for(lambda: world.latest_status().last_rejection_reason.startswith("estop"), 10)
    time.sleep(0.3)
    assert np.allclose(world.joint_states[-1].position, before, atol=1e-9)  # held
    assert wait_for(lambda: any(d.message == "e-stop engaged" and d.level == d.ERROR for d in world.diagnostics), 5)

    assert world.call(world.resume).success
    world.chunk(world.sim_time, offsets, sequence=5)
    assert wait_for(lambda: world.latest_status().active_chunk_sequence == 5, 10)
    assert world.latest_status().chunks_accepted == 1 and world.latest_status().chunks_rejected == 4


def test_the_watchdog_holds_when_the_chunks_stop(world):
    horizon = 40  # 2 s of motion, but the watchdog is 0.6 s: the policy went silent
    offsets = np.c_[np.linspace(0, 0.15, horizon), np.zeros((horizon, 2))]
    world.chunk(world.sim_time, offsets, sequence=9)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_EXECUTING, 10)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_HOLDING, 10)
    time.sleep(0.5)  # the deceleration (0.15 s) is over; the sim arm's lag (tau 0.05 s) settles
    first = np.array(world.joint_states[-1].position)
    time.sleep(0.3)
    assert np.allclose(world.joint_states[-1].position, first, atol=2e-4)  # holding still
    held_x = world.poses[-1].pose.position.x - ArmKinematics().fk(HOME)[0][0]
    assert 0.01 < held_x < 0.1  # stopped part way, not at the end of the stale plan
    assert wait_for(
        lambda: any(kv.key == "watchdog_stops" and kv.value == "1" for d in world.diagnostics for kv in d.values), 5
    )


@pytest.mark.parametrize("world", [["control_source:=teleop"]], indirect=True)
def test_teleop_drives_the_arms_and_publishes_the_same_topics(world):
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_TELEOP, 10)
    start = np.array(world.joint_states[-1].position)
    assert wait_for(lambda: np.abs(np.array(world.joint_states[-1].position) - start).max() > 0.05, 10)  # it moves
    world.chunk(world.sim_time, np.zeros((10, 3)), sequence=1)
    assert wait_for(lambda: world.latest_status().last_rejection_reason.startswith("teleop"), 10)
    assert world.poses and world.poses[-1].header.frame_id == "left_base_link"


def test_the_control_source_switches_at_run_time_both_ways_and_never_during_an_e_stop(world):
    """Issue 28 item 1, over DDS: while the policy's chunks arrive, /rotvla/set_control_source
    hands the arms to teleop (the chunks are refused, the status, the diagnostics and the
    latched /rotvla/control_source name the source) and back (chunks drive again); a
    switch is refused during an e-stop, and a source that does not exist is refused."""
    from std_msgs.msg import String

    from rotvla_common.ros import LATCHED_QOS
    from rotvla_msgs.srv import SetControlSource

    switch = world.node.create_client(SetControlSource, "/rotvla/set_control_source")
    announced = []
    world.node.create_subscription(String, "/rotvla/control_source", lambda m: announced.append(m.data), LATCHED_QOS)

    def set_source(source):
        assert switch.wait_for_service(timeout_sec=10)
        future = switch.call_async(SetControlSource.Request(source=source))
        assert wait_for(future.done, 10)
        return future.result()

    assert wait_for(lambda: announced == ["policy"], 10)  # latched: a late subscriber learns who drives
    sequence = iter(range(1, 10_000))
    offsets = np.c_[np.linspace(0, 0.02, 10), np.zeros((10, 2))]

    def stream(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            world.chunk(world.sim_time, offsets, sequence=next(sequence))
            time.sleep(0.1)

    stream(0.5)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_EXECUTING, 10)
    assert world.latest_status().control_source == "policy"

    reply = set_source("teleop")
    assert reply.success and reply.previous_source == "policy", reply.message
    rejected_before = world.latest_status().chunks_rejected
    stream(1.0)
    status = world.latest_status()
    assert status.mode == ExecutorStatus.MODE_TELEOP and status.control_source == "teleop"
    assert status.chunks_rejected > rejected_before and status.last_rejection_reason.startswith("teleop")
    assert wait_for(lambda: announced[-1] == "teleop", 5)
    assert wait_for(
        lambda: any(kv.key == "control_source" and kv.value == "teleop" for d in world.diagnostics for kv in d.values),
        5,
    )

    reply = set_source("bogus")
    assert not reply.success and "policy" in reply.message and world.latest_status().control_source == "teleop"

    assert world.call(world.estop).success
    reply = set_source("policy")
    assert not reply.success and "e-stop" in reply.message
    assert world.latest_status().control_source == "teleop"
    assert world.call(world.resume).success

    reply = set_source("policy")
    assert reply.success and reply.previous_source == "teleop", reply.message
    accepted = world.latest_status().chunks_accepted
    stream(0.5)
    assert wait_for(lambda: world.latest_status().chunks_accepted > accepted, 10)
    assert world.latest_status().control_source == "policy" and announced[-1] == "policy"


@pytest.mark.parametrize("world", [["dry_run:=true"]], indirect=True)
def test_a_dry_run_computes_and_publishes_every_command_and_sends_none(world):
    """Issue 31 item 4: the chunk is scheduled, executed through IK and the safety filter and
    its commands published on /rotvla/dry_run/joint_commands, moving 6 cm forward; the arms
    (the sim backend's, which move only when commanded) stay exactly where they were; the
    status says dry run."""
    shown = []
    world.node.create_subscription(JointState, "/rotvla/dry_run/joint_commands", shown.append, SENSOR_QOS)
    assert wait_for(lambda: world.latest_status().dry_run, 10)
    start = np.array(world.joint_states[-1].position)
    horizon = 11
    offsets = np.c_[np.linspace(0, 0.06, horizon), np.zeros((horizon, 2))]
    world.chunk(world.sim_time, offsets, sequence=7, gripper=0.0)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_EXECUTING, 10)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_HOLDING, 20)
    status = world.latest_status()
    assert status.chunks_accepted == 1 and 8 <= status.executed_steps <= horizon and status.dry_run
    time.sleep(0.3)
    assert np.array_equal(np.array(world.joint_states[-1].position), start)  # nothing reached the arms
    assert shown and shown[-1].name[:7] == [f"left_joint{i}" for i in range(1, 7)] + ["left_gripper"]
    commanded = np.array(shown[-1].position[:6])
    tip, _ = ArmKinematics().fk(commanded)
    home, _ = ArmKinematics().fk(HOME)
    assert np.linalg.norm(tip - home - [0.06, 0.0, 0.0]) < 0.003  # the path it would have taken


def test_homing_over_dds_brings_the_arms_back_to_the_ready_pose_and_holds(world):
    """Issue 31 item 3: a chunk moves the arms; ``home`` (the set_control_source service, as
    ``rotvla_ctl home`` calls it) brings both back to the ready pose (config: ready_joints)
    and holds them there; the status names the source."""
    from rotvla_msgs.srv import SetControlSource

    offsets = np.c_[np.linspace(0, 0.06, 11), np.zeros((11, 2))]
    world.chunk(world.sim_time, offsets, sequence=1)
    assert wait_for(lambda: world.latest_status().mode == ExecutorStatus.MODE_HOLDING, 20)
    assert np.abs(np.array(world.joint_states[-1].position[:6]) - HOME).max() > 0.05  # moved away
    switch = world.node.create_client(SetControlSource, "/rotvla/set_control_source")
    assert switch.wait_for_service(timeout_sec=10)
    future = switch.call_async(SetControlSource.Request(source="home"))
    assert wait_for(future.done, 10)
    reply = future.result()
    assert reply.success and "ready pose in" in reply.message, reply.message
    assert wait_for(lambda: world.latest_status().control_source == "home", 5)

    def at_home():
        positions = np.array(world.joint_states[-1].position)
        return all(np.abs(positions[k : k + 6] - HOME).max() < 2e-3 for k in (0, 7))

    assert wait_for(at_home, 20)
    time.sleep(0.3)
    assert at_home() and world.latest_status().mode == ExecutorStatus.MODE_TELEOP
