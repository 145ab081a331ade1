"""Issue 31 item 1: the executor is a lifecycle node, driven over DDS from another process as
`ros2 lifecycle set` drives it. No command reaches the arms unless it is active; configured,
it reads and publishes the arms' state; deactivated, it holds; a backend that cannot connect
leaves it unconfigured with the reason, and it stays up to be configured again."""

import sys

import numpy as np
import pytest

from conftest import executor_process

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from test_robustness_nodes import Client, alive, chunk_message  # noqa: E402

from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS  # noqa: E402
from rotvla_msgs.msg import ActionChunk, ExecutorStatus  # noqa: E402

NODE = "/arx_r5_executor"


@pytest.fixture
def client(rclpy_context):
    c = Client("lifecycle_client")  # the executor's chunk_source: it plays the policy
    yield c
    c.close()


def start_executor(peer_factory, *params: str):
    return executor_process(peer_factory, "chunk_source:=lifecycle_client", *params)


def _service(client, srv_type, name: str):
    """One service client per test node and service, kept on it: each new one must be matched anew."""
    services = client.__dict__.setdefault("lifecycle_services", {})
    if name not in services:
        services[name] = client.node.create_client(srv_type, name)
        assert services[name].wait_for_service(timeout_sec=60), f"no {name}"
    return services[name]


def _ask(client, srv_type, name: str, request, tries: int = 24):
    """A request sent as soon as the service is discovered can be lost (the server has not
    matched this client's reply reader yet): sent again until a reply comes."""
    service = _service(client, srv_type, name)
    for _ in range(tries):
        future = service.call_async(request)
        if client.spin_until(future.done, 5):
            return future.result()
    raise AssertionError(f"{name}: no reply in {5 * tries} s")


def state(client) -> str:
    return _ask(client, GetState, f"{NODE}/get_state", GetState.Request()).current_state.label


def transition(client, transition_id: int) -> bool:
    name = f"{NODE}/change_state"
    if name not in client.__dict__.get("lifecycle_services", {}):  # matched by a refused transition first
        _ask(client, ChangeState, name, ChangeState.Request(transition=Transition(id=255)))
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return _ask(client, ChangeState, name, request, tries=1).success


class Arms:
    """The arms of the topic backend as another process has them: joint states at 50 Hz, and
    every command that reaches them counted."""

    def __init__(self, client):
        from arx_r5_driver.configuration import HOME_JOINTS

        self.client = client
        names = [f"{arm}_{j}" for arm in ("left", "right") for j in (*(f"joint{i}" for i in range(1, 7)), "gripper")]
        position = [*HOME_JOINTS, 0.04] * 2
        publisher = client.node.create_publisher(JointState, "/sim/joint_states", SENSOR_QOS)

        def publish():
            msg = JointState(name=names, position=[float(v) for v in position])
            msg.header.stamp = client.node.get_clock().now().to_msg()
            publisher.publish(msg)

        client.node.create_timer(0.02, publish)
        self.commands = client.listen(JointState, "/sim/joint_commands")
        self.states = client.listen(JointState, "/joint_states", SENSOR_QOS)
        self.statuses = client.listen(ExecutorStatus, "/rotvla/executor_status")
        self.chunks = client.node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)
        self.sent = 0

    def drive(self, seconds: float) -> tuple[int, int]:
        """Chunks every 0.1 s for ``seconds`` (the policy); the commands and states that came."""
        commands, states = len(self.commands), len(self.states)
        for _ in range(int(seconds / 0.1)):
            self.sent += 1
            self.chunks.publish(chunk_message(self.client, horizon=8, sequence=self.sent))
            self.client.spin_for(0.1)
        return len(self.commands) - commands, len(self.states) - states


@pytest.mark.timeout(300)
def test_commands_reach_the_arms_only_while_the_executor_is_active(client, peer_factory):
    node = start_executor(peer_factory, "backend:=topic", "initial_state:=unconfigured")
    arms = Arms(client)
    assert state(client) == "unconfigured"
    assert arms.drive(1.5) == (0, 0), "unconfigured: nothing read, nothing sent"

    assert transition(client, Transition.TRANSITION_CONFIGURE) and state(client) == "inactive"
    commands, states = arms.drive(2.0)
    assert commands == 0 and states > 10, (commands, states)  # the arms read and published, not driven
    assert client.spin_until(lambda: arms.statuses, 10)
    assert arms.statuses[-1].chunks_accepted == 0
    assert arms.statuses[-1].last_rejection_reason.startswith("inactive"), arms.statuses[-1].last_rejection_reason

    assert transition(client, Transition.TRANSITION_ACTIVATE) and state(client) == "active"
    commands, states = arms.drive(2.0)
    assert commands > 50 and states > 10, (commands, states)
    assert arms.statuses[-1].chunks_accepted > 0
    # The first command after the activation is where the arms are, not where anything computed
    # while inactive would have taken them.
    from arx_r5_driver.configuration import HOME_JOINTS

    first = np.asarray(arms.commands[0].position)
    assert np.abs(first[:6] - HOME_JOINTS).max() < 1e-3, first

    assert transition(client, Transition.TRANSITION_DEACTIVATE) and state(client) == "inactive"
    client.spin_for(0.3)  # commands already in flight
    commands, states = arms.drive(2.0)
    assert commands == 0 and states > 10, (commands, states)  # holding: nothing sent, still read

    assert transition(client, Transition.TRANSITION_CLEANUP) and state(client) == "unconfigured"
    client.spin_for(0.3)
    assert arms.drive(1.5) == (0, 0), "released: nothing read, nothing sent"

    # Configured and activated again: the same node drives again.
    assert transition(client, Transition.TRANSITION_CONFIGURE) and transition(client, Transition.TRANSITION_ACTIVATE)
    commands, _ = arms.drive(1.5)
    assert commands > 30 and alive(node), commands
    assert node.stop() == 0, "".join(node.lines[-30:])


@pytest.mark.timeout(180)
def test_a_backend_that_cannot_connect_leaves_the_executor_unconfigured_with_the_reason(client, peer_factory):
    """On this machine ARX's SDK is absent: the sdk backend cannot connect. Asked over DDS, the
    configure fails, the node says why and stays up, unconfigured (started with
    initial_state:=active it would not start at all: test_node_shutdown)."""
    node = start_executor(peer_factory, "backend:=sdk", "initial_state:=unconfigured")
    assert state(client) == "unconfigured"
    assert not transition(client, Transition.TRANSITION_CONFIGURE)
    assert state(client) == "unconfigured" and alive(node)
    assert client.spin_until(lambda: any("configure failed" in line for line in node.lines), 10), node.lines
    (line,) = [line for line in node.lines if "configure failed" in line]
    assert "the arms are not connected" in line and "arx_r5_sdk" in line.lower().replace("-", "_"), line
    assert node.stop() == 0, "".join(node.lines[-30:])


@pytest.mark.timeout(180)
def test_rotvla_ctl_reset_homes_the_robot_between_episodes_and_returns_once_there(client, peer_factory):
    """Issue 31 item 3: between recorded episodes on the robot (no /sim/reset in the cell),
    ``rotvla_ctl reset`` homes both arms under the caps and returns when the joint states say
    they are at the ready pose; the arms are held there."""
    import subprocess

    from arx_r5_driver.configuration import HOME_JOINTS

    start_executor(peer_factory, "backend:=sim", "left.initial_joints:=[0.4, -1.5, -0.7, -0.2, 0.3, 0.2]")
    states = client.listen(JointState, "/joint_states", SENSOR_QOS)
    assert client.spin_until(lambda: states, 30)
    assert np.abs(np.asarray(states[-1].position[:6]) - HOME_JOINTS).max() > 0.3  # away from the ready pose
    done = subprocess.run(
        [sys.executable, "-m", "rotvla_ros.nodes.rotvla_ctl", "reset", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "there after" in done.stdout, done.stdout + done.stderr
    client.spin_for(0.5)
    positions = np.asarray(states[-1].position)
    assert all(np.abs(positions[k : k + 6] - HOME_JOINTS).max() < 0.02 for k in (0, 7)), positions
