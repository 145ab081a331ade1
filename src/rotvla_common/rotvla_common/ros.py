"""ROS helpers every node of the workspace uses: parameters with descriptors, stamps, QoS
profiles, diagnostics, the node main."""

from __future__ import annotations

import concurrent.futures
import faulthandler
import importlib
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

# Camera streams: best effort accepts both reliable and best-effort publishers (REP-2003:
# sensor drivers publish reliable, consumers subscribe best effort); keep a few frames.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
# Action chunks and status: reliable, short queue.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Latched state: late joiners get the last value.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class MissingParameterError(ValueError):
    """A required parameter that no parameter file or override set."""


def declare(node: Node, name: str, default: Any, description: str, read_only: bool = False) -> Any:
    """Declare a parameter with its descriptor and return its value. A ``default`` of None
    makes it required (a list of floats): it must come from a parameter file or override."""
    return _declare(node, name, default, ParameterDescriptor(description=description, read_only=read_only))


def _declare(node: Node, name: str, default: Any, descriptor: ParameterDescriptor) -> Any:
    description = descriptor.description
    if default is None:
        node.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, descriptor)
        try:
            return node.get_parameter(name).value
        except ParameterUninitializedException:
            raise MissingParameterError(
                f"parameter {name!r} is required ({description}): set it in the robot's "
                "parameter file (config/robot.yaml)"
            ) from None
    node.declare_parameter(name, default, descriptor)
    return node.get_parameter(name).value


@dataclass(frozen=True)
class Param:
    """One row of a node's parameter table: its default (None: required), what it is, and
    what values it takes. ``low``/``high`` become the descriptor's range, which rclpy enforces
    when the parameter is declared and set, and ``ros2 param describe`` shows; ``choices`` are
    checked at start and named in the descriptor's constraints."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple = ()


def declare_table(node: Node, table: dict[str, Param]) -> dict[str, Any]:
    """Declare every parameter of ``table``; their values, checked. A value outside its range
    or choices raises ValueError naming the parameter: the node does not start on it."""
    values = {}
    for name, spec in table.items():
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        if spec.low is not None or spec.high is not None:
            low, high = spec.low, spec.high
            if isinstance(spec.default, int) and not isinstance(spec.default, bool):
                bounds = IntegerRange(
                    from_value=int(low if low is not None else -(2**31)),
                    to_value=int(high if high is not None else 2**31 - 1),
                )
                descriptor.integer_range = [bounds]
            else:
                bounds = FloatingPointRange(
                    from_value=float(low if low is not None else -1e300),
                    to_value=float(high if high is not None else 1e300),
                )
                descriptor.floating_point_range = [bounds]
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
        try:
            values[name] = _declare(node, name, spec.default, descriptor)
        except InvalidParameterValueException as error:
            raise ValueError(f"parameter {name}: {error} ({spec.description})") from None
        if spec.choices and values[name] not in spec.choices:
            raise ValueError(f"parameter {name}: {values[name]!r} is not one of {', '.join(map(repr, spec.choices))}")
    return values


def to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _sec_nanosec(seconds: float) -> dict[str, int]:
    # Round once, in nanoseconds, so that a carry (1.9999999999 s) reaches the seconds.
    sec, nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def to_time(seconds: float) -> Time:
    return Time(**_sec_nanosec(seconds))


def to_duration(seconds: float) -> Duration:
    return Duration(**_sec_nanosec(seconds))


def now_seconds(node: Node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def diagnostic_array(node: Node, name: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticArray:
    """``level``: one of OK, WARN, ERROR, STALE below."""
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in values.items()],
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE


def _drain(executor, timeout: float) -> None:
    """Let the callbacks a MultiThreadedExecutor has handed to its thread pool end before it is
    shut down. rclpy's shutdown destroys its wake-up guard condition without waiting for them
    (its wait is skipped once the shutdown flag is set), and each such callback then fails on
    the guard: "The following exception was never retrieved: cannot use Destroyable because
    destruction was requested" at every stop. The pool takes no new work; what it holds gets
    ``timeout`` seconds, with the guard still there (a cancelled one would leave its coroutine
    never awaited). The pool and its futures are rclpy's private attributes: where a version
    lacks them this does nothing."""
    pool = getattr(executor, "_executor", None)
    if not isinstance(pool, concurrent.futures.ThreadPoolExecutor):
        return
    pool.shutdown(wait=False)
    tasks = [t for t in list(getattr(executor, "_futures", [])) if hasattr(t, "done")]  # rclpy Tasks
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(t.done() or t.cancelled() for t in tasks):
        time.sleep(0.005)


def _node_class(entry):
    """A node class, or ``"module:Class"`` imported now (a heavy module: torch)."""
    if not isinstance(entry, str):
        return entry
    module, class_name = entry.split(":")
    return getattr(importlib.import_module(module), class_name)


def fix_parameters(node: Node) -> None:
    """Refuse every parameter change once the node runs, with the reason. Our nodes read their
    parameters when they start: a later change would do nothing while saying it worked, and a
    change of ``use_sim_time`` hands the node's clock to whoever publishes /clock (a peer did
    that to the robot's executor: its control loop froze, then ran on the peer's clock, raced
    to 11x, past the speed caps). Registered last, it runs before rclpy's own callbacks (the
    time source's, which would switch the clock before a refusal). A node class names what
    it does read while running in ``RUNTIME_PARAMETERS`` (the simulation's injected delays):
    those alone may change."""
    name = node.get_fully_qualified_name()
    runtime = set(getattr(node, "RUNTIME_PARAMETERS", ())) - {"use_sim_time"}

    def refuse(parameters: list[Parameter]) -> SetParametersResult:
        if all(p.name in runtime for p in parameters):
            return SetParametersResult(successful=True)
        names = ", ".join(p.name for p in parameters)
        reason = f"{name}: parameters are fixed while the node runs (asked to change {names}); restart it"
        node.get_logger().warning(reason, throttle_duration_sec=1.0)
        return SetParametersResult(successful=False, reason=reason)

    node.add_on_set_parameters_callback(refuse)


def build_node(entry, **kwargs) -> Node:
    """The node of ``entry`` (a class or ``"module:Class"``), its parameters fixed from now on:
    how launch (run_node) and the composed runner start every node."""
    node = _node_class(entry)(**kwargs)
    fix_parameters(node)
    return node


def run_node(node_class, args=None, num_threads: int = 4) -> None:
    """The ``main`` of every node: init, build, spin until SIGINT or SIGTERM (to the node alone
    or to its whole process group, once or repeatedly) or a shutdown, then stop in order and
    exit 0 without a traceback:

    1. stop spinning (the signal only sets a flag: nothing is interrupted mid-callback);
    2. the executor: no callback is in flight once it has shut down;
    3. ``destroy_node``: the node stops and joins its own threads (the simulation, the control
       loop, the inference worker) while the context still carries their last messages, so
       none of them publishes into a shut-down context; then the context.

    A signal while the node is being built (a checkpoint loading, say) ends the build at once;
    so does one while its module is imported, when ``node_class`` is given as ``"module:Class"``
    (a node whose module imports torch takes seconds to import).
    A node that cannot start exits 1 with one line saying why; so does a node whose own
    thread died (it sets ``fatal_error``). ``num_threads`` > 1: a
    MultiThreadedExecutor, for nodes with callbacks that block (a checkpoint load); 1: a
    SingleThreadedExecutor, whose much smaller cost per callback matters for a node that takes
    /clock at hundreds of Hz (measured: the executor node's 200 Hz loop fell to 0 cycles/s
    under a MultiThreadedExecutor with /clock at 400 Hz on 2 cores, 18 of 18 expected with a
    SingleThreadedExecutor)."""
    # `kill -USR1 <pid>` prints every thread's stack: what a hung node is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Plain flags, not threading.Event: the handler runs between two bytecodes of the main
    # thread, which may be inside an Event's lock (a deadlock, seen once in the stop tests).
    flags = {"stop": False, "building": False}

    def on_signal(signum, frame):
        flags["stop"] = True
        if flags["building"]:
            flags["building"] = False
            raise KeyboardInterrupt  # abandon the build; later signals only set the flag

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    name = node_class.rsplit(":", 1)[-1] if isinstance(node_class, str) else getattr(node_class, "__name__", "node")
    node = executor = None
    code = 0
    try:
        flags["building"] = True
        node = build_node(node_class)
        flags["building"] = False
        executor = MultiThreadedExecutor(num_threads=num_threads) if num_threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        # A bounded wait: it notices the stop flag, a shutdown of the context, and a thread of
        # the node's own that died (``fatal_error``: the simulation, say).
        while not flags["stop"] and rclpy.ok(context=node.context) and not getattr(node, "fatal_error", None):
            executor.spin_once(timeout_sec=0.1)
        if getattr(node, "fatal_error", None):
            get_logger(name).fatal(f"stopping: {node.fatal_error}")
            code = 1
    except KeyboardInterrupt:
        pass
    except Exception as error:
        flags["building"] = False
        if node is None:  # it could not start: one clear line, no traceback
            get_logger(name).fatal(f"cannot start: {type(error).__name__}: {error}")
        else:  # a bug in a callback: loudly, with its traceback
            get_logger(name).fatal(f"stopped by an error:\n{traceback.format_exc()}")
        code = 1
    finally:
        flags["building"] = False
        try:
            if executor is not None:  # first: no callback may be in flight when the node's entities go
                _drain(executor, timeout=3.0)
                executor.shutdown(timeout_sec=5.0)  # stops its thread pool, or the interpreter waits on it
            if node is not None:
                node.destroy_node()
        finally:
            rclpy.try_shutdown()
            # Python resets its handlers to the default at exit: a repeated signal (launch's, then
            # the terminal's) arriving then would kill the process that has already stopped cleanly.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if code:
        sys.exit(code)
