"""What the nodes of this package share. The generic helpers (parameters with descriptors,
stamps, QoS profiles, diagnostics, the node main) live in ``rotvla_common.ros``, shared with
the ARX R5 executor; they are re-exported here for this package's nodes."""

from __future__ import annotations

import time

from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from rotvla_common.ros import (  # noqa: F401
    ERROR,
    LATCHED_QOS,
    OK,
    RELIABLE_QOS,
    SENSOR_QOS,
    STALE,
    WARN,
    Param,
    declare,
    declare_table,
    diagnostic_array,
    now_seconds,
    run_node,
    to_duration,
    to_seconds,
    to_time,
)

# Observations: only the newest matters, so best effort: a lost sample is simply skipped.
# Reliable delivery of these large messages stalled the whole stream for seconds when one
# sample was lost under load (the reader holds later samples back until the writer repairs
# the gap), measured on a 2-core machine during checkpoint loads.
OBSERVATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)

# The instruction in force, latched (the camera ingestion node copies it into observations).


class ServiceUnavailable(TimeoutError):
    """A service that is not on the graph, or did not answer in time; the message names it."""


class GraphClient:
    """A tool's side of the graph (``rotvla_check``, ``rotvla_ctl``, the simulated episodes'
    clients): one node, spun in the caller's thread of control, with blocking service calls."""

    def __init__(self, name: str):
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.namespace = self.node.get_namespace().rstrip("/")
        self._clients: dict[tuple[type, str], object] = {}

    def spin_for(self, seconds: float, until=lambda: False) -> bool:
        """Spin for ``seconds`` (wall time) or until ``until()``; its last value."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            self.executor.spin_once(timeout_sec=0.02)
        return until()

    def client(self, srv_type, name: str):
        """The node's client of service ``name`` (one per service, kept)."""
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        return self._clients[key]

    def require(self, srv_type, name: str, request, timeout: float = 10.0):
        """The service's response; raises ``ServiceUnavailable`` when the service is not there
        within ``timeout`` or does not answer within it."""
        client = self.client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise ServiceUnavailable(
                f"service {self.node.resolve_service_name(name)} is not available "
                "(is the stack running, in this namespace?)"
            )
        future = client.call_async(request)
        if not self.spin_for(timeout, future.done):
            raise ServiceUnavailable(f"{self.node.resolve_service_name(name)} did not answer within {timeout:g} s")
        return future.result()

    def call(self, srv_type, name: str, request, timeout: float = 5.0):
        """The service's response, or None when it is not there or does not answer in time."""
        try:
            return self.require(srv_type, name, request, timeout)
        except ServiceUnavailable:
            return None

    def parameters(self, node: str) -> dict:
        """Every parameter of ``node`` (relative names resolve in this namespace); {} when it does not answer."""
        listed = self.call(ListParameters, f"{node}/list_parameters", ListParameters.Request())
        if listed is None:
            return {}
        names = list(listed.result.names)
        got = self.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=names))
        return {} if got is None else {n: parameter_value_to_python(v) for n, v in zip(names, got.values)}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
