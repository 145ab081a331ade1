"""A backend for arms that live in another process: a simulator (the MuJoCo cell of
rotvla_ros.sim) or any robot interface that takes joint position commands on a topic and
reports joint states on another. Both are sensor_msgs/JointState with names
``<arm>_joint1..6`` and ``<arm>_gripper`` (opening, m)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from sensor_msgs.msg import JointState

from rotvla_common import topics
from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS

from ..kinematics import joint_names
from . import BackendContext, BackendNotReady


class JointStateCache:
    """The newest position of every named joint from a JointState subscription, and the
    stamp of the message it came in.

    With ``now`` (the subscriber's clock, s), a message stamped more than ``future_tolerance``
    ahead of it is dropped: after the clock jumps back (a simulation reset) the messages still
    in flight from before it must not pass for the new state. A message whose names and
    positions do not pair up, or with a non-finite position, is dropped too (counted)."""

    def __init__(self, now: Callable[[], float] | None = None, future_tolerance: float = 0.5):
        self._lock = threading.Lock()
        self._positions: dict[str, float] = {}
        self._stamps: dict[str, float] = {}
        self.received = threading.Event()
        self._now, self.future_tolerance = now, future_tolerance
        self.dropped = 0

    def update(self, msg: JointState) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        positions = np.asarray(msg.position, dtype=float)
        if (
            len(msg.name) != len(positions)
            or not np.isfinite(positions).all()
            or (self._now is not None and stamp > self._now() + self.future_tolerance)
        ):
            self.dropped += 1
            return
        with self._lock:
            self._positions.update(zip(msg.name, positions.tolist()))
            self._stamps.update(dict.fromkeys(msg.name, stamp))
        self.received.set()

    def clear(self) -> None:
        with self._lock:
            self._positions.clear()
            self._stamps.clear()
        self.received.clear()

    def get(self, names: list[str]) -> tuple[np.ndarray, float] | None:
        """The joints' positions and the stamp of the oldest message among them, s; None
        until every joint has been received."""
        with self._lock:
            if not all(n in self._positions for n in names):
                return None
            return np.array([self._positions[n] for n in names]), min(self._stamps[n] for n in names)


class TopicArm:
    def __init__(self, arm: str, states: JointStateCache, publisher, clock):
        self.arm = arm
        self.names = joint_names(arm)
        self.states = states
        self.publisher = publisher
        self.clock = clock
        self._measured_at: float | None = None

    def read(self) -> tuple[np.ndarray, float]:
        reading = self.states.get(self.names)
        if reading is None:
            raise BackendNotReady(f"no joint state for {self.arm} yet")
        values, self._measured_at = reading
        return values[:6], float(values[6])

    def measured_at(self) -> float | None:
        """The stamp of the state the last ``read`` returned."""
        return self._measured_at

    def command(self, joints: np.ndarray, gripper: float) -> None:
        msg = JointState(name=self.names, position=[*map(float, joints), float(gripper)])
        msg.header.stamp = self.clock.now().to_msg()
        self.publisher.publish(msg)

    def gravity_compensation(self) -> None:
        raise NotImplementedError("a topic-driven arm has no compliant mode")

    def close(self) -> None:
        pass


class TopicTeleop:
    """Teleop targets from a JointState topic (the simulation's scripted expert)."""

    def __init__(self, arms: tuple[str, ...], targets: JointStateCache):
        self.arms = arms
        self.cache = targets
        self._since = -float("inf")  # targets stamped before the takeover are not the operator's

    def targets(self, now: float) -> dict[str, tuple[np.ndarray, float]]:
        out = {}
        for arm in self.arms:
            reading = self.cache.get(joint_names(arm))
            if reading is not None and reading[1] >= self._since:
                values, _ = reading
                out[arm] = (values[:6], float(values[6]))
        return out

    def engage(self, now: float, commands: dict[str, tuple[np.ndarray, float]]) -> None:
        self._since = now


class TopicBackend:
    """Arms in another process (the MuJoCo cell of ``rotvla_sim``): commands out on one
    JointState topic, measured states in on another; teleop targets on a third."""

    PARAMETERS = {
        "joint_command_topic": (topics.SIM_JOINT_COMMANDS, "Joint position commands to the arms."),
        "joint_state_topic": (topics.SIM_JOINT_STATES, "Measured joint states of the arms."),
        "teleop_topic": (topics.TELEOP_JOINT_TARGETS, "Teleop joint targets (the sim's scripted expert)."),
    }
    ARM_PARAMETERS: dict = {}

    def __init__(self, context: BackendContext):
        self.context = context
        node, values = context.node, context.values
        self.states = JointStateCache(now=context.now)
        self.caches = [self.states]
        self.subscriptions = [
            node.create_subscription(JointState, values["joint_state_topic"], self.states.update, SENSOR_QOS)
        ]
        self.publisher = node.create_publisher(JointState, values["joint_command_topic"], RELIABLE_QOS)

    def arm(self, name: str) -> TopicArm:
        return TopicArm(name, self.states, self.publisher, self.context.node.get_clock())

    def teleop_source(self, arms: tuple[str, ...]) -> TopicTeleop:
        targets = JointStateCache(now=self.context.now)
        self.caches.append(targets)
        self.subscriptions.append(
            self.context.node.create_subscription(
                JointState, self.context.values["teleop_topic"], targets.update, RELIABLE_QOS
            )
        )
        return TopicTeleop(arms, targets)

    def advance(self, elapsed: float) -> None:
        pass  # the other process keeps the arms' time

    def forget(self) -> None:
        for cache in self.caches:
            cache.clear()

    def close(self) -> None:
        """Off the graph (a lifecycle cleanup: a configure after it subscribes afresh)."""
        node = self.context.node
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        node.destroy_publisher(self.publisher)
        self.subscriptions = []
