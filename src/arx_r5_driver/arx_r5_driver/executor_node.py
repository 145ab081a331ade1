"""The ARX R5 executor node: action chunks in, safe joint commands out at the control rate.

- ``/rotvla/action_chunk`` chunks are validated and scheduled by ``DualArmController``; a
  rejected chunk is counted, logged, reported in ``ExecutorStatus`` and on ``/diagnostics``
  with its reason, and changes nothing.
- A control thread wakes every ``1 / control_rate`` seconds of the node's clock (the ROS
  clock: with ``use_sim_time`` it follows ``/clock``) and runs one controller cycle: sim
  arms are stepped by the elapsed time, commands go to the backend. The thread never
  catches up in a burst: a cycle that wakes more than a period late is counted as an
  overrun and the schedule restarts from now. Wake-up lateness (jitter) is on /diagnostics.
- Published: ``/joint_states`` (both arms and grippers, measured) and
  ``/rotvla/eef_pose/<arm>`` (forward kinematics of the measured joints, in the arm's base
  frame) every ``publish_divisor`` cycles; ``/rotvla/executor_status`` every
  ``status_divisor`` cycles, with every limit hit since the previous status.
- ``/rotvla/estop`` holds at once and refuses chunks until ``/rotvla/resume`` (std_srvs/Trigger).
- ``control_source`` says who drives at start: the policy (chunks) or teleop, the leader
  arms (sdk), the simulated operator (topic) or a scripted motion (sim); the same topics are
  published either way. ``/rotvla/set_control_source`` (rotvla_msgs/SetControlSource) switches
  it while the arms run, both ways, bumpless (``DualArmController.take_over``); refused during
  an e-stop. ``home`` brings both arms to each arm's ``ready_joints`` at ``homing_speed`` of
  the joint caps and holds them there. Who drives is in the status, the diagnostics and on
  the latched ``/rotvla/control_source`` (std_msgs/String), which recordings keep.
- ``dry_run: true`` runs everything but the arms: each command is computed, checked and
  published on ``/rotvla/dry_run/joint_commands``, none is sent (the backend's arms still
  read); the status and the log say so.
- A lifecycle node (ros2_control's hardware interfaces are managed the same way):
  ``configure`` connects the backend and starts the control loop, which reads and publishes
  the arms' state but sends nothing; ``activate`` lets commands through (the first starts from
  the measured pose); ``deactivate`` closes them off again and the arms hold their last
  command; ``cleanup`` releases the arms. Chunks are refused unread unless the node is active.
  ``initial_state`` (default ``active``) is how far the node goes by itself at start:
  ``ros2 lifecycle set /arx_r5_executor <transition>`` does the rest.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rotvla_common import topics
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import ACTIVE, CONTROL_SOURCES, EXECUTOR_STATES, HOME, POLICY, TELEOP, UNCONFIGURED
from rotvla_common.contract import INACTIVE as INACTIVE_LIFECYCLE
from rotvla_common.ros import (
    ERROR,
    LATCHED_QOS,
    OK,
    RELIABLE_QOS,
    SENSOR_QOS,
    WARN,
    declare,
    diagnostic_array,
    run_node,
    to_seconds,
    to_time,
)
from rotvla_common.text import bounded
from rotvla_msgs.msg import ActionChunk, ExecutorStatus
from rotvla_msgs.srv import SetControlSource

from .backends import BackendContext, BackendNotReady, GatedArm, available_backends, backend_class
from .chunks import INACTIVE, INVALID, TOO_LARGE, UNKNOWN_SOURCE, ChunkRejected
from .configuration import ARM_PARAMETERS, HOME_JOINTS, PARAMETERS, build_controller, controller_config  # noqa: F401
from .controller import Cycle, DualArmController, Mode, SwitchRefused
from .kinematics import joint_names
from .teleop import Homing

assert Mode.ESTOP == ExecutorStatus.MODE_ESTOP and Mode.TELEOP == ExecutorStatus.MODE_TELEOP

UNKNOWN_NODE = "_NODE_NAME_UNKNOWN_"  # what the graph says of a publisher whose node's name is not known yet
NAME_WAIT = 0.3  # s a new sender's first chunk is held while its node's name is discovered
MAX_HELD_SENDERS = 8

# Chunks: reliable, and a queue deep enough that a flood of refused chunks from another peer
# (5,000 a second) does not push the policy's out before they are taken.
CHUNK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)


class ExecutorNode(LifecycleNode):
    def __init__(self, **kwargs):
        self._stop = threading.Event()  # before anything can fail: destroy_node reads it
        self._thread: threading.Thread | None = None
        self.controller: DualArmController | None = None
        self.backend = None
        self._gates: list[GatedArm] = []
        self.lifecycle_state = UNCONFIGURED
        super().__init__("arx_r5_executor", **kwargs)
        p = functools.partial(declare, self)
        backend_name = p(
            "backend",
            "sim",
            f"How the arms are reached ({', '.join(available_backends())}): sim (simulated arms in "
            "this process), topic (arms in another process, the MuJoCo cell) or sdk (ARX's SDK "
            "on the CAN bus); more through the arx_r5_driver.backends entry points.",
            read_only=True,
        )
        backend_type = backend_class(backend_name)
        control_source = p(
            "control_source",
            "policy",
            "Who drives at start: policy (action chunks) or teleop (leader arms / the simulated "
            "operator / scripted); switched at run time by the set_control_source service.",
            read_only=True,
        )
        if control_source not in (POLICY, TELEOP):  # homing needs the arms' state: a run-time switch
            raise ValueError(f"control_source must be {POLICY} or {TELEOP}, not {control_source!r}")
        initial_state = p(
            "initial_state",
            ACTIVE,
            "How far the node goes by itself at start: active (configured and activated), "
            "inactive (configured: the arms read, nothing sent) or unconfigured; `ros2 lifecycle "
            "set` does the rest.",
            read_only=True,
        )
        if initial_state not in EXECUTOR_STATES:
            raise ValueError(f"initial_state must be one of {', '.join(EXECUTOR_STATES)}, not {initial_state!r}")
        self.publish_divisor = max(1, p("publish_divisor", 2, "Publish joint states and EEF poses every N cycles."))
        self.status_divisor = max(1, p("status_divisor", 10, "Publish ExecutorStatus every N cycles."))
        self.realtime_priority = p(
            "realtime_priority",
            0,
            "SCHED_FIFO priority of the control thread (1-99; 0: "
            "the default scheduler). Needs CAP_SYS_NICE or an rtprio limit.",
            read_only=True,
        )
        self.frame_prefix = p("frame_prefix", "", "Prefix of the arm base frames (<prefix><arm>_base_link).")
        self.dry_run = p(
            "dry_run",
            False,
            "Compute, check and publish every command (rotvla/dry_run/joint_commands), send none to "
            "the arms: how a new checkpoint is first watched on the robot.",
            read_only=True,
        )
        action_names = tuple(p("action_names", list(DUAL_ARM_EEF_ACTION_NAMES), "The action layout chunks must have."))
        self.chunk_source = p(
            "chunk_source",
            "policy",
            "The node whose chunks are executed (its name, in this node's namespace): a chunk from "
            "any other publisher on the topic is refused before it is read. Empty: any publisher "
            "(a bench with no policy node).",
            read_only=True,
        )
        values = {
            name: p(name, default, text, read_only=True)
            for name, (default, text) in {**PARAMETERS, **backend_type.PARAMETERS}.items()
        }
        self.arm_names = tuple(values["arms"])
        self._joint_names = [name for arm in self.arm_names for name in joint_names(arm)]  # of a JointState
        for arm in self.arm_names:
            for name, (default, text) in {**ARM_PARAMETERS, **backend_type.ARM_PARAMETERS}.items():
                values[f"{arm}.{name}"] = p(f"{arm}.{name}", default, text, read_only=True)
        self.values = values
        config = controller_config(values)
        self._backend_type, self._backend_name = backend_type, backend_name
        self._action_names, self._initial_source = action_names, control_source
        self._teleop = None  # built the first time teleop drives (the leader arms connect then)
        self._homing()  # a homing_speed out of range stops the node here, not at the first homing
        rate = values["control_rate"]
        self.period = config.control_period

        self._lock = threading.Lock()  # guards the controller
        self._limits_since_status: set[str] = set()
        self._lateness = deque(maxlen=int(10 * rate))  # s, the last 10 s of wake-ups
        self.overruns = 0
        self.waiting_cycles = self.failed_cycles = self.time_resets = 0
        self._last_rejection_log, self._unlogged_rejections = -float("inf"), 0
        self._rejected_at_report = 0
        self._cycle_index = 0
        self._last_measured: tuple[float, np.ndarray] | None = None

        self.joint_state_publisher = self.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
        if self.dry_run:
            self.dry_run_publisher = self.create_publisher(JointState, topics.DRY_RUN_COMMANDS, SENSOR_QOS)
        self.pose_publishers = {
            arm: self.create_publisher(PoseStamped, topics.eef_pose(arm), SENSOR_QOS) for arm in self.arm_names
        }
        self.status_publisher = self.create_publisher(ExecutorStatus, topics.EXECUTOR_STATUS, RELIABLE_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        inputs = MutuallyExclusiveCallbackGroup()
        self.max_chunk_bytes = values["max_chunk_bytes"]
        self._trusted: set[bytes] = set()  # publisher GIDs of chunk_source on the chunk topic
        self._trusted_at = -float("inf")
        self._asked: dict[bytes, float] = {}  # sender -> when the graph was last asked about it
        self._senders: dict[bytes, str] = {}  # publisher GID -> its node's full name, as last asked
        self._untrusted: dict[bytes, int] = {}  # refused chunks per other publisher (bounded)
        self._held: dict[bytes, tuple[float, bytes]] = {}  # sender -> (until when, its newest chunk)
        self._held_timer = self.create_timer(
            0.02, self._release_held, callback_group=inputs, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self._held_timer.cancel()  # started by the first chunk held
        # Serialized, with the sender: who sent a chunk and its size are checked before any of
        # it is decoded (raw=True). A deep queue: under a flood from another peer the policy's
        # chunks must not be pushed out before they are taken.
        self._chunk_topic = self.resolve_topic_name(topics.ACTION_CHUNK)
        self.create_subscription(
            ActionChunk, topics.ACTION_CHUNK, self._on_serialized_chunk, CHUNK_QOS, callback_group=inputs, raw=True
        )
        self.create_service(Trigger, topics.ESTOP, self._on_estop, callback_group=inputs)
        self.create_service(Trigger, topics.RESUME, self._on_resume, callback_group=inputs)
        self.source_publisher = self.create_publisher(String, topics.CONTROL_SOURCE, LATCHED_QOS)
        self.source_publisher.publish(String(data=control_source))
        self.create_service(
            SetControlSource, topics.SET_CONTROL_SOURCE, self._on_set_control_source, callback_group=inputs
        )
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._clock_moved = threading.Event()
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=True),
            post_callback=lambda jump: self._clock_moved.set(),
        )
        self._description = (
            ("DRY RUN (no command reaches the arms): " if self.dry_run else "")
            + f"{backend_name} arms {list(self.arm_names)} at {rate:g} Hz, source {control_source}, "
            f"watchdog {config.watchdog_timeout} s, latency compensation {config.latency_compensation:+.3f} s"
        )
        # A start that cannot reach its state is a failed start (launch stops the system: half a
        # system never runs on); a transition asked for later fails into the state it came from.
        if initial_state != UNCONFIGURED and self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(self._configure_failure)
        if initial_state == ACTIVE and self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("activation failed")

    # -- the lifecycle ----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Connect the arms and start the control loop (reading and publishing their state;
        nothing is sent until the node is active). A backend that cannot connect leaves the
        node unconfigured, with the reason in the log."""
        try:
            self.backend = self._backend_type(
                BackendContext(values=self.values, control_period=self.period, now=self._now, node=self)
            )
            gates: list[GatedArm] = []

            def gated(name: str) -> GatedArm:
                gates.append(GatedArm(self.backend.arm(name)))
                return gates[-1]

            controller = build_controller(self.values, gated, self._action_names)
            if self._initial_source == TELEOP:
                controller.set_teleop(self._teleop_source())
        except Exception as error:  # the CAN bus, the SDK, the leader arms: the operator fixes it and retries
            self._configure_failure = f"the arms are not connected: {type(error).__name__}: {bounded(str(error), 600)}"
            self.get_logger().error(f"configure failed, {self._configure_failure}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self.controller, self._gates = controller, gates
        self._rejected_at_report = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._control_loop, name="arx-r5-control", daemon=True)
        self._thread.start()
        self.lifecycle_state = INACTIVE_LIFECYCLE
        self.get_logger().info(f"configured: {self._description}; inactive (the arms read, nothing sent)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            # From the measured pose, not from what was computed while nothing was sent.
            self.controller.desync()
            if self.controller.teleop is not None:
                # Without the arms' state yet, it engages from the first state read, as at a start.
                with contextlib.suppress(SwitchRefused, BackendNotReady):
                    self.controller.take_over(self.controller.teleop, self._now(), self.controller.control_source)
            for gate in self._gates:
                gate.open = not self.dry_run
            self.lifecycle_state = ACTIVE
        self.get_logger().info("active: " + ("a dry run, nothing sent" if self.dry_run else "commands reach the arms"))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            for gate in self._gates:
                gate.open = False
            self.lifecycle_state = INACTIVE_LIFECYCLE
            self.controller.desync()  # the chunk in force is dropped, never resumed
            if self.controller.control_source == HOME:  # homing is asked for again once active
                self.controller.set_teleop(None)
        self.get_logger().info("inactive: the arms hold their last command; chunks are refused")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: the arms are released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while {state.label}: the arms are released")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Stop the control loop and release the arms (to unconfigured); safe to repeat."""
        for gate in self._gates:
            gate.open = False
        self._stop.set()
        if self._thread is not None:
            self._clock_moved.set()
            self._thread.join(timeout=1.0)
            self._thread = None
        with self._lock:
            controller, self.controller, self._gates = self.controller, None, []
        if controller is not None:
            for arm in controller.arms:
                arm.backend.close()
        self._teleop = None  # built again from the next backend
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        self._last_measured = None
        self.lifecycle_state = UNCONFIGURED

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _sleep_until(self, instant: float) -> None:
        """Wall clock only; the controller asks for at most one control period."""
        remaining = instant - self._now()
        if remaining > 0:
            time.sleep(min(remaining, self.period))

    # -- inputs ---------------------------------------------------------------------------

    def _trusts(self, gid: bytes) -> bool | None:
        """Whether ``gid`` is a publisher of ``chunk_source`` on the chunk topic; None for a
        new sender whose node's name is not discovered yet (ROS 2 sends names after the
        publishers: the policy's first chunk must not be refused for that; ``_hold``). The
        graph is asked again for a sender not asked about in the last 0.5 s, at most 20 times
        a second in all (a flood of senders must not become a flood of graph queries)."""
        if not self.chunk_source or gid in self._trusted:
            return True
        now = time.monotonic()
        asked = self._asked.get(gid, -float("inf"))
        if now - asked >= 0.5 and now - self._trusted_at >= 0.05:
            first_time = gid not in self._asked
            if len(self._asked) > 256:
                self._asked.clear()
            self._asked[gid] = self._trusted_at = now
            self._ask_graph()
            if first_time and self._senders.get(gid, "").endswith(UNKNOWN_NODE):
                return None
        return gid in self._trusted

    def _hold(self, gid: bytes, data: bytes) -> bool:
        """Keep the newest chunk of a sender whose name is being discovered, for at most
        ``NAME_WAIT`` s (a few senders at a time); the spin thread never waits for a name: an
        e-stop behind it would wait too. False when there is no room."""
        if gid not in self._held and len(self._held) >= MAX_HELD_SENDERS:
            return False
        deadline = self._held.get(gid, (time.monotonic() + NAME_WAIT, b""))[0]
        self._held[gid] = (deadline, data)
        if self._held_timer.is_canceled():
            self._held_timer.reset()
        return True

    def _release_held(self) -> None:
        """Every 20 ms while chunks are held: each sender named ``chunk_source`` by now has its
        chunk read; one still unnamed at its deadline, or named otherwise, is refused."""
        if not self._held or self.lifecycle_state != ACTIVE:  # (deactivated meanwhile: dropped)
            self._held.clear()
            self._held_timer.cancel()
            return
        self._ask_graph()
        now = time.monotonic()
        for gid, (deadline, data) in list(self._held.items()):
            if gid in self._trusted:
                del self._held[gid]
                self._read_chunk(data)
            elif now >= deadline or not self._senders.get(gid, UNKNOWN_NODE).endswith(UNKNOWN_NODE):
                del self._held[gid]
                self._refuse_sender(gid)

    def _ask_graph(self) -> None:
        publishers = self.get_publishers_info_by_topic(self._chunk_topic)
        self._senders = {bytes(i.endpoint_gid): f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in publishers}
        source = f"{self.get_namespace().rstrip('/')}/{self.chunk_source}"
        self._trusted = {gid for gid, name in self._senders.items() if name == source}

    def _on_serialized_chunk(self, data: bytes, info: dict) -> None:
        if self.lifecycle_state != ACTIVE:
            reason = f"the executor is {self.lifecycle_state} (ros2 lifecycle): no motion, refused unread"
            self._refuse(ChunkRejected(INACTIVE, reason), sequence=None, source="?")
            return
        gid = bytes((info.get("publisher_gid") or {}).get("data") or b"")
        trusted = self._trusts(gid)
        if trusted is None and self._hold(gid, data):
            return
        if not trusted:
            self._refuse_sender(gid)
            return
        self._read_chunk(data)

    def _refuse_sender(self, gid: bytes) -> None:
        if len(self._untrusted) < 64 or gid in self._untrusted:
            self._untrusted[gid] = self._untrusted.get(gid, 0) + 1
        sender = self._senders.get(gid, f"an unknown node ({gid.hex()[:16]})")
        reason = f"from {bounded(sender, 100)}, not {self.chunk_source!r} (chunk_source): refused unread"
        self._refuse(ChunkRejected(UNKNOWN_SOURCE, reason), sequence=None, source="another peer")

    def _read_chunk(self, data: bytes) -> None:
        """A chunk of the trusted sender, still serialized: its size, then its contents."""
        if len(data) > self.max_chunk_bytes:
            reason = f"{len(data)} bytes serialized (max_chunk_bytes {self.max_chunk_bytes}): not decoded"
            self._refuse(ChunkRejected(TOO_LARGE, reason), sequence=None, source="?")
            return
        try:
            msg = deserialize_message(data, ActionChunk)
        except Exception as error:  # bytes that are no ActionChunk (a peer of another type)
            self._refuse(ChunkRejected(INVALID, f"undecodable: {type(error).__name__}"), sequence=None, source="?")
            return
        self._on_chunk(msg)

    def _refuse(self, rejection: ChunkRejected, sequence, source: str) -> None:
        with self._lock:
            if self.controller is not None:  # (unconfigured: nothing to count on)
                self.controller.count_rejection(rejection, self._now())
        self._log_rejection(sequence, source, str(rejection))

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self._lock:
            now = self._now()
            try:
                self.controller.submit(
                    stamp=to_seconds(msg.header.stamp),
                    dt=to_seconds(msg.dt),
                    horizon=msg.horizon,
                    action_names=tuple(msg.action_names),
                    actions=np.asarray(msg.actions, dtype=np.float64),
                    now=now,
                    sequence=msg.sequence,
                    checkpoint_id=msg.checkpoint_id,
                )
                return
            except ChunkRejected as rejection:
                reason = str(rejection)
        self._log_rejection(msg.sequence, msg.checkpoint_id or "?", reason)

    def _log_rejection(self, sequence, source: str, reason: str) -> None:
        """At most one log line a second: a peer that keeps sending bad chunks (or a policy's
        stale ones on a slow machine) would bury everything else; the line says how many it
        stands for. /diagnostics carries the counts by reason once a second (a message per
        rejection was 553 a second under a flood)."""
        now = time.monotonic()
        self._unlogged_rejections += 1
        if now - self._last_rejection_log >= 1.0:
            more = self._unlogged_rejections - 1
            chunk = f"chunk {sequence}" if sequence is not None else "a chunk"
            self.get_logger().warning(
                f"{chunk} from {source} rejected: {reason}"
                + (f" (and {more} more since the last report)" if more else "")
            )
            self._last_rejection_log, self._unlogged_rejections = now, 0

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self.controller is None:
                response.success, response.message = True, "unconfigured: no arm is driven"
                return response
            self.controller.estop()
        self.get_logger().error("E-STOP: holding; chunks are refused until /rotvla/resume")
        response.success, response.message = True, "e-stop engaged: holding"
        return response

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self.controller is None:
                response.success, response.message = False, "unconfigured: nothing to resume"
                return response
            was_engaged = self.controller.estopped
            self.controller.resume()
        self.get_logger().info("resume: chunks accepted again" if was_engaged else "resume: e-stop was not engaged")
        response.success = True
        response.message = (
            "resumed: the next chunk starts from the held pose" if was_engaged else "e-stop was not engaged"
        )
        return response

    def _homing(self) -> Homing:
        ready = {arm: np.asarray(self.values[f"{arm}.ready_joints"], float) for arm in self.arm_names}
        return Homing(ready, np.asarray(self.values["max_joint_velocity"], float), self.values["homing_speed"])

    def _teleop_source(self):
        if self._teleop is None:
            self._teleop = self.backend.teleop_source(self.arm_names)
        return self._teleop

    def _on_set_control_source(
        self, request: SetControlSource.Request, response: SetControlSource.Response
    ) -> SetControlSource.Response:
        wanted = request.source
        if self.lifecycle_state != ACTIVE:
            response.success = False
            response.message = f"{bounded(wanted, 40)} refused: the executor is {self.lifecycle_state} (ros2 lifecycle)"
            return response
        response.previous_source = self.controller.control_source
        if wanted not in CONTROL_SOURCES:
            response.success = False
            response.message = f"source must be one of {', '.join(CONTROL_SOURCES)}, not {bounded(wanted, 40)!r}"
            return response
        try:
            source = {TELEOP: self._teleop_source, HOME: self._homing}.get(wanted, lambda: None)()
            with self._lock:
                if wanted == response.previous_source and wanted != HOME:  # homing again starts again
                    response.success, response.message = True, f"{wanted} drives already"
                    return response
                if source is not None:
                    self.controller.take_over(source, self._now(), wanted)
                else:
                    self.controller.hand_back()
        except (SwitchRefused, BackendNotReady) as refused:
            response.success, response.message = False, f"{wanted} refused: {refused}"
            self.get_logger().warning(response.message)
            return response
        except Exception as error:  # a teleop source that cannot start (leader arms not answering)
            response.success = False
            response.message = f"{wanted} refused: {type(error).__name__}: {bounded(str(error), 200)}"
            self.get_logger().error(response.message)
            return response
        self.source_publisher.publish(String(data=wanted))
        response.success, response.message = True, f"{wanted} drives (was {response.previous_source})"
        if wanted == HOME:
            response.message += f": the ready pose in {source.duration:.1f} s"
        self.get_logger().info(response.message)
        return response

    # -- the control loop -----------------------------------------------------------------

    def _wait_until(self, wake_ns: int) -> bool:
        """Sleep until the node's clock reads ``wake_ns`` (or jumps back: the loop must see
        that at once, not after the old time has come round again); False when stopping.
        Not Clock.sleep_until: each of its calls leaves a callback registered on the context
        (200 a second here, for as long as the node runs)."""
        clock = self.get_clock()
        went_back_below = wake_ns - 2 * int(round(self.period * 1e9))
        while not self._stop.is_set():
            now_ns = clock.now().nanoseconds
            remaining = (wake_ns - now_ns) * 1e-9
            if remaining <= 0 or (0 < now_ns < went_back_below):
                return True
            if clock.ros_time_is_active:  # sim time: wake on /clock updates
                self._clock_moved.wait(min(remaining, 0.1))
                self._clock_moved.clear()
            else:
                time.sleep(remaining)
        return False

    def _set_realtime_priority(self) -> None:
        """Other processes (the policy, the cameras) compete for the cores: with a real-time
        priority the control thread preempts them when it wakes (bench_control_jitter.py)."""
        if self.realtime_priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))  # 0: this thread
            self.get_logger().info(f"control thread at SCHED_FIFO priority {self.realtime_priority}")
        except (PermissionError, OSError) as error:
            self.get_logger().warning(
                f"no real-time priority for the control thread ({error}): timing may suffer "
                "under load; allow it with `ulimit -r` / limits.conf rtprio or CAP_SYS_NICE"
            )

    def _control_loop(self) -> None:
        # A woken control thread waits for the GIL until the thread holding it yields, by
        # default every 5 ms: hand it over within 0.5 ms (bench_control_jitter.py).
        sys.setswitchinterval(0.0005)
        self._set_realtime_priority()
        clock = self.get_clock()
        period_ns = int(round(self.period * 1e9))
        # With sim time, the clock reads 0 until the first /clock message.
        while clock.now().nanoseconds == 0 and not self._stop.is_set():
            self._clock_moved.wait(0.1)
        wake_ns = clock.now().nanoseconds + period_ns
        last_ns = None
        while self._wait_until(wake_ns) and self.context.ok():
            now_ns = clock.now().nanoseconds
            if last_ns is not None and now_ns < last_ns:  # time jumped back: the world was reset
                self._on_time_reset()
                wake_ns, last_ns = now_ns + period_ns, None
                continue
            self._lateness.append((now_ns - wake_ns) * 1e-9)
            elapsed = (now_ns - last_ns) * 1e-9 if last_ns is not None else self.period
            self.backend.advance(elapsed)
            self._cycle(now_ns * 1e-9, elapsed)
            last_ns = now_ns
            wake_ns += period_ns
            if now_ns >= wake_ns:  # more than a period late: skip the missed cycles, no burst
                self.overruns += 1
                wake_ns = now_ns + period_ns

    def _cycle(self, now: float, elapsed: float) -> None:
        """One controller cycle. Nothing that goes wrong in it ends the control thread: the
        arms keep their last command (position-controlled, they hold), and it is counted,
        logged and reported."""
        # On sim time the clock moves in jumps (one per simulation step) and the sim arms
        # integrate over those jumps: reading it again at the send says nothing about how long
        # the arms move for, and when it jumped while this cycle computed, the next cycle (same
        # reading) would get a speed cap over ~0 s and hold the arm. The caps then apply over
        # the time between the cycles' own instants.
        wall_clock = not self.get_clock().ros_time_is_active
        try:
            with self._lock:
                cycle = self.controller.step(
                    now,
                    send_clock=self._now if wall_clock else None,
                    wait_until=self._sleep_until if wall_clock else None,
                )
        except BackendNotReady as waiting:
            self.waiting_cycles += 1
            self.get_logger().warning(f"waiting for the arms: {waiting}", throttle_duration_sec=2.0)
            return
        except Exception as error:  # a fault in the controller or a backend: hold, say so
            self.failed_cycles += 1
            self.get_logger().error(
                f"control cycle failed ({type(error).__name__}: {error}): holding", throttle_duration_sec=1.0
            )
            return
        self._publish(cycle, elapsed)

    def _on_time_reset(self) -> None:
        """The clock went back (a simulation reset, a bag played again): what the joint-state
        caches hold and the trajectory in force belong to another world; start again from the
        arms' state as the new clock reports it."""
        with self._lock:
            self.backend.forget()
            self.controller.desync()
            self._last_measured = None
        self.time_resets += 1
        self.get_logger().info("the clock jumped back: resynchronising with the arms")

    def _publish(self, cycle: Cycle, elapsed: float) -> None:
        self._cycle_index += 1
        self._limits_since_status.update(cycle.limits_hit)
        if self._cycle_index % self.publish_divisor == 0:
            self._publish_state(cycle)
            if self.dry_run:
                self._publish_dry_run(cycle)
        if self._cycle_index % self.status_divisor == 0:
            self.status_publisher.publish(self._status(cycle.time))
            self._limits_since_status.clear()

    def _publish_state(self, cycle: Cycle) -> None:
        # Stamped with when the state was measured, not when this cycle read it: consumers
        # pair it with camera frames by stamp. A measurement already published (arms over a
        # topic that has not moved on since) is not published again.
        if self._last_measured is not None and cycle.measured_time <= self._last_measured[0]:
            return
        stamp = to_time(cycle.measured_time)
        msg = JointState()
        msg.header.stamp = stamp
        positions = np.c_[cycle.measured_joints, cycle.measured_grippers]  # (A, 7)
        msg.name = self._joint_names
        msg.position = positions.ravel().tolist()
        if self._last_measured is not None:
            velocity = (positions - self._last_measured[1]) / (cycle.measured_time - self._last_measured[0])
            msg.velocity = velocity.ravel().tolist()
        self._last_measured = (cycle.measured_time, positions)
        self.joint_state_publisher.publish(msg)
        for arm, q in zip(self.controller.arms, cycle.measured_joints):
            position, rotation = arm.kinematics.fk(q)
            pose = PoseStamped()
            pose.header.stamp = stamp
            pose.header.frame_id = f"{self.frame_prefix}{arm.name}_base_link"
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = position.tolist()
            x, y, z, w = Rotation.from_matrix(rotation).as_quat()
            pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = (
                x,
                y,
                z,
                w,
            )
            self.pose_publishers[arm.name].publish(pose)

    def _publish_dry_run(self, cycle: Cycle) -> None:
        msg = JointState(name=self._joint_names)
        msg.position = np.c_[cycle.joints, cycle.grippers].ravel().tolist()  # (A, 7) commanded
        msg.header.stamp = to_time(cycle.time)
        self.dry_run_publisher.publish(msg)

    def _status(self, now: float) -> ExecutorStatus:
        with self._lock:
            controller = self.controller
            msg = ExecutorStatus(
                mode=int(controller.mode),
                control_source=controller.control_source,
                dry_run=self.dry_run,
                queue_depth=controller.queue_depth,
            )
            msg.header.stamp = to_time(now)
            if controller.active_chunk is not None:
                msg.active_chunk_sequence = controller.active_chunk.sequence
                msg.active_checkpoint_id = controller.active_chunk.checkpoint_id
            counters = controller.counters
            msg.executed_steps = counters.executed_steps
            msg.chunks_accepted = counters.chunks_accepted
            msg.chunks_rejected = counters.chunks_rejected
            msg.limit_events = counters.limit_events
            if controller.last_rejection is not None:
                msg.last_rejection_reason = controller.last_rejection[0]
                msg.last_rejection_stamp = to_time(controller.last_rejection[1])
        msg.limits_hit = sorted(self._limits_since_status)
        return msg

    # -- diagnostics ----------------------------------------------------------------------

    def _diagnostics(self, controller: DualArmController, level: bytes, message: str) -> DiagnosticArray:
        lateness = np.array(self._lateness) if self._lateness else np.zeros(1)
        with self._lock:
            counters = controller.counters
            values = {
                "lifecycle": self.lifecycle_state,
                "mode": Mode(controller.mode).name,
                "control_source": controller.control_source,
                "dry_run": self.dry_run,
                "executed_steps": counters.executed_steps,
                "chunks_accepted": counters.chunks_accepted,
                "chunks_rejected": counters.chunks_rejected,
                "limit_events": counters.limit_events,
                "watchdog_stops": counters.watchdog_stops,
                "last_rejection": controller.last_rejection[0] if controller.last_rejection else "",
                **{f"rejected.{reason}": n for reason, n in sorted(counters.rejections.items())},
                "untrusted_senders": len(self._untrusted),
            }
        values.update(
            {
                "wake_lateness_p50_ms": float(np.percentile(lateness, 50) * 1e3),
                "wake_lateness_p99_ms": float(np.percentile(lateness, 99) * 1e3),
                "wake_lateness_max_ms": float(lateness.max() * 1e3),
                "overruns": self.overruns,
                "waiting_cycles": self.waiting_cycles,
                "failed_cycles": self.failed_cycles,
                "time_resets": self.time_resets,
            }
        )
        return diagnostic_array(self, "rotvla/executor", level, message, values)

    def _publish_diagnostics(self) -> None:
        controller = self.controller  # (a cleanup may detach it meanwhile: this one is read)
        if controller is None:
            message = "unconfigured: the arms are not connected (ros2 lifecycle set <node> configure)"
            self.diagnostics.publish(
                diagnostic_array(self, "rotvla/executor", WARN, message, {"lifecycle": self.lifecycle_state})
            )
            return
        rejected = controller.counters.chunks_rejected
        new_rejections, self._rejected_at_report = rejected - self._rejected_at_report, rejected
        if controller.estopped:
            level, message = ERROR, "e-stop engaged"
        elif self.lifecycle_state != ACTIVE:
            state = self.lifecycle_state
            level, message = WARN, f"{state}: the arms read, nothing sent (ros2 lifecycle set <node> activate)"
        elif controller.mode == Mode.HOLDING and controller.counters.watchdog_stops:
            level, message = WARN, "holding"
        elif new_rejections:
            last = controller.last_rejection[0] if controller.last_rejection else ""
            level, message = (
                WARN,
                f"{new_rejections} chunks rejected since the last report, the last: {bounded(last, 200)}",
            )
        else:
            level, message = OK, Mode(controller.mode).name.lower()
        self.diagnostics.publish(self._diagnostics(controller, level, message))

    def destroy_node(self):
        self._stop.set()
        if hasattr(self, "_clock_moved"):  # (built to the end)
            self._release()
        elif self.backend is not None:
            self.backend.close()
        super().destroy_node()


def main(args=None):
    # Every callback here is short (the control loop has its own thread): one thread spins.
    run_node(ExecutorNode, args, num_threads=1)


if __name__ == "__main__":
    main()
