"""Every rotvla_msgs message and service type crosses a process boundary over real DDS."""

import pytest
from ros_samples import fill, rotvla_message_types, rotvla_service_types

from conftest import TESTS_DIR, spin_until

SEED = 7


@pytest.fixture(scope="module")
def peer(rclpy_context):
    from conftest import Peer

    peer = Peer(TESTS_DIR / "peers" / "message_peer.py", str(SEED))
    peer.wait_ready()
    yield peer
    assert peer.stop() in (0, -15)


def test_every_message_type_is_received_from_another_process(rclpy_context, peer):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("message_test_subscriber")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    received = {}
    for name, cls in rotvla_message_types().items():
        node.create_subscription(cls, f"/rotvla_test/{name}", lambda msg, n=name: received.setdefault(n, msg), 10)
    try:
        assert spin_until(executor, lambda: len(received) == len(rotvla_message_types()), timeout=20), (
            f"received only {sorted(received)}"
        )
        for name, cls in rotvla_message_types().items():
            expected = fill(cls, SEED)
            assert received[name] == expected, name
            # A filled message has every field away from its default: the comparison means something.
            assert received[name] != cls(), name
    finally:
        executor.remove_node(node)
        node.destroy_node()


@pytest.mark.parametrize("name", sorted(rotvla_service_types()))
def test_every_service_round_trips_to_another_process(rclpy_context, peer, name):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    srv_cls = rotvla_service_types()[name]
    node = Node(f"service_test_client_{name.lower()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    client = node.create_client(srv_cls, f"/rotvla_test/{name}")
    try:
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(fill(srv_cls.Request, SEED))
        assert spin_until(executor, future.done, timeout=10)
        assert future.result() == fill(srv_cls.Response, SEED)
        # A different request gets the empty response: the peer really compared it.
        future = client.call_async(fill(srv_cls.Request, SEED + 1))
        assert spin_until(executor, future.done, timeout=10)
        assert future.result() == srv_cls.Response()
    finally:
        node.destroy_client(client)
        executor.remove_node(node)
        node.destroy_node()
