"""``rotvla_run``: the system of ``rotvla_ros.bringup`` in one process, for machines without
launch_ros and for the integration tests. Same nodes, same parameter files, same overrides
as ``ros2 launch rotvla_ros bringup.launch.py``. The exception is a node whose spec says
``own_process`` (the policy: see ``NodeSpec``). It is started as a child process with the
same files and overrides, stopped with SIGINT after the others, and its exit status becomes
the runner's.

Each node spins in an executor of its own on its own thread: a SingleThreadedExecutor, or a
MultiThreadedExecutor where the node has blocking callbacks (the policy's checkpoint load).
One shared MultiThreadedExecutor for all of them could not keep up with /clock at 200 Hz
plus camera images on 2 cores (its cost per callback is many times a single-threaded one's).

    rotvla_run --task block_to_plate --checkpoint models/tiny-random [--seconds 30] [--expert]
               [--namespace cell_a]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from rotvla_common.arguments import existing_file
from rotvla_common.contract import ACTIVE, EXECUTOR_STATES
from rotvla_common.parameters import read_parameter_files, write_overrides
from rotvla_common.ros import build_node
from rotvla_common.topics import cell_ros_arguments

from ..bringup import NodeSpec, SystemArgs, default_config_dir, node_set, parameter_files
from ..sim.shift import shift_argument
from ..sim.tasks import TASK_NAMES


def node_parameters(spec: NodeSpec, files: list[Path], namespace: str = "") -> list[Parameter]:
    """The node's parameters from the files (its overrides file last), resolved for the node
    in ``namespace`` as rcl resolves them (rotvla_common.parameters)."""
    values = read_parameter_files(files, spec.name, namespace)
    return [Parameter(name, value=value) for name, value in values.items()]


def build(spec: NodeSpec, files: list[Path], namespace: str = ""):
    return build_node(spec.entry, parameter_overrides=node_parameters(spec, files, namespace))


def start_process(spec: NodeSpec, files: list[Path], ros_args: list[str]) -> subprocess.Popen:
    """The node as its own process, as launch starts it: the same parameter files (its
    overrides file last), then the runner's own --ros-args."""
    command = [sys.executable, "-m", "rotvla_common.run", spec.entry, "--ros-args"]
    for path in files:
        command += ["--params-file", str(path)]
    command += [arg for arg in ros_args if arg != "--ros-args"]
    # A session of its own: a terminal's Ctrl-C reaches the runner only, which stops the
    # child once, in order. And the child goes when the runner goes, however it goes.
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_end_with_parent)


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the parent process dies (Linux prctl)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spin(name: str, executor, context, running: threading.Event, errors: dict) -> None:
    try:
        while running.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.25)  # bounded: see rotvla_common.ros.run_node
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    except Exception as error:  # a bug in a callback: the runner reports it and stops the system
        if context.ok():
            errors[name] = f"{type(error).__name__}: {error}"


class System:
    """The nodes, started in order (the simulation first: the executor waits for its joints)."""

    def __init__(self, args: SystemArgs, config_dir: Path | None = None, ros_args: list[str] = ()):
        self.files = parameter_files(config_dir or default_config_dir(), args)
        self.specs = node_set(args)
        self.namespace = args.namespace
        self.ros_args = list(ros_args)
        self._overrides_dir = tempfile.TemporaryDirectory(prefix="rotvla_run_")
        self.nodes, self.executors, self.threads = {}, [], []
        self.processes: dict[str, subprocess.Popen] = {}
        self.running = threading.Event()
        self.errors: dict[str, str] = {}  # node -> what ended its spinning

    def start(self) -> None:
        self.running.set()
        for spec in self.specs:
            files = [*self.files, write_overrides(spec.name, spec.parameters, Path(self._overrides_dir.name))]
            if spec.own_process:
                self.processes[spec.name] = start_process(spec, files, self.ros_args)
                continue
            node = build(spec, files, self.namespace)
            self.nodes[spec.name] = node
            executor = MultiThreadedExecutor(num_threads=spec.threads) if spec.threads > 1 else SingleThreadedExecutor()
            executor.add_node(node)
            thread = threading.Thread(
                target=_spin,
                args=(spec.name, executor, node.context, self.running, self.errors),
                name=f"spin-{spec.name}",
                daemon=True,
            )
            thread.start()
            self.executors.append(executor)
            self.threads.append(thread)

    def stop(self) -> None:
        """In order: stop spinning, destroy the nodes (each stops its own threads while the
        context can still carry their last messages), then shut the context down."""
        self.running.clear()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for thread in self.threads:
            thread.join(timeout=5.0)
        for executor in self.executors:
            executor.shutdown(timeout_sec=5.0)
        for node in reversed(list(self.nodes.values())):
            node.destroy_node()
        stop_timeouts = {spec.name: spec.stop_timeout for spec in self.specs}
        for name, process in self.processes.items():
            try:
                process.wait(timeout=stop_timeouts[name])
            except subprocess.TimeoutExpired:
                print(f"[rotvla_run] {name} did not stop within {stop_timeouts[name]:g} s: killed", file=sys.stderr)
                process.kill()
                process.wait()
        self._overrides_dir.cleanup()
        rclpy.try_shutdown()

    def failure(self) -> str:
        """Why a required node is no longer running (empty: all are)."""
        for spec in self.specs:
            if not spec.required:
                continue
            process = self.processes.get(spec.name)
            if process is not None and process.poll() is not None:
                return f"{spec.name} exited with status {process.returncode}"
            node = self.nodes.get(spec.name)
            if node is not None and getattr(node, "fatal_error", ""):
                return f"{spec.name}: {node.fatal_error}"
            if spec.name in self.errors:
                return f"{spec.name} stopped: {self.errors[spec.name]}"
        return ""

    @property
    def exit_code(self) -> int:
        """Non-zero when a node process of its own failed."""
        return next((p.returncode for p in self.processes.values() if p.returncode not in (0, None)), 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hardware", action="store_true", help="the real robot (default: the simulated cell)")
    parser.add_argument("--task", default="block_to_plate", choices=TASK_NAMES)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--instruction", default="")
    parser.add_argument("--device", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shift", type=shift_argument, default="none", help="sim: domain shift for evaluation (none, all, table,...)"
    )
    parser.add_argument("--expert", action="store_true", help="sim: the scripted expert drives the arms (demos)")
    parser.add_argument(
        "--operator",
        action="store_true",
        help="sim: the policy drives, the scripted expert takes over on /rotvla/set_control_source",
    )
    parser.add_argument("--no-policy", action="store_true", help="no policy node (recording demonstrations)")
    parser.add_argument("--dry-run", action="store_true", help="the executor shows every command and sends none")
    parser.add_argument(
        "--executor-state",
        choices=EXECUTOR_STATES,
        default=ACTIVE,
        help="how far the executor's lifecycle goes at start (inactive: the arms read, nothing sent)",
    )
    parser.add_argument("--record", action="store_true", help="the episode recorder node (/rotvla/recorder/*)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this many wall seconds (0: Ctrl-C)")
    parser.add_argument("--config-dir", type=Path, default=None)
    parser.add_argument("--namespace", default="", help="the cell's ROS namespace (cells side by side)")
    parser.add_argument(
        "--params-file", type=existing_file, default=None, help="parameters applied after the config's (calibrations)"
    )
    options, ros_args = parser.parse_known_args(argv)
    cell_arguments = cell_ros_arguments(options.namespace)
    if cell_arguments:
        ros_args = [*ros_args, "--ros-args", *cell_arguments]
    # Signals are handled here, not by rclpy (which would shut the context down under the
    # nodes' own threads): SIGINT and SIGTERM end the main loop, then stop() runs in order.
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    system = System(
        SystemArgs(
            sim=not options.hardware,
            task=options.task,
            checkpoint=options.checkpoint,
            instruction=options.instruction,
            device=options.device,
            seed=options.seed,
            shift=options.shift,
            expert=options.expert,
            operator=options.operator,
            dry_run=options.dry_run,
            executor_state=options.executor_state,
            policy=not options.no_policy,
            record_episodes=options.record,
            status_overwrite=sys.stdout.isatty(),
            namespace=options.namespace,
            params_file=options.params_file or "",
        ),
        options.config_dir,
        ros_args,
    )
    if options.hardware:
        print("[rotvla_run] hardware: start the cameras with realsense2_camera (see launch/bringup.launch.py)")
    failure = ""
    try:
        system.start()
        deadline = time.monotonic() + options.seconds if options.seconds > 0 else float("inf")
        while rclpy.ok() and time.monotonic() < deadline and not (failure := system.failure()):
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    except Exception as error:  # a node that cannot start: one line, and nothing left running
        failure = f"cannot start: {type(error).__name__}: {error}"
    finally:
        if failure:
            print(f"[rotvla_run] {failure}: stopping the system", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the orderly stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        system.stop()
    return system.exit_code or (1 if failure else 0)


if __name__ == "__main__":
    sys.exit(main())
