"""Bringup: the full simulated stack through the composed runner, observed over DDS from
another process; the launch file and the runner share one description of the node set."""

import ast
import functools
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from conftest import spin_until as spin_until_on

pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from arx_r5_driver.kinematics import R5_JOINT_LIMITS  # noqa: E402
from rotvla_common.ros import RELIABLE_QOS, SENSOR_QOS  # noqa: E402
from rotvla_msgs.msg import ActionChunk, ExecutorStatus  # noqa: E402
from rotvla_ros.bringup import LAUNCH_ARGUMENTS, SystemArgs, node_set, parameter_files  # noqa: E402

LAUNCH_FILE = REPO_ROOT / "launch" / "bringup.launch.py"


class Observer:
    def __init__(self):
        self.node = Node("bringup_observer")
        self.seen = {"image": [], "info": [], "chunk": [], "status": [], "joints": [], "success": [], "clock": []}
        sub = self.node.create_subscription
        sub(Image, "/cameras/head/color/image_raw", self.seen["image"].append, SENSOR_QOS)
        sub(CameraInfo, "/cameras/left_wrist/color/camera_info", self.seen["info"].append, SENSOR_QOS)
        sub(ActionChunk, "/rotvla/action_chunk", self.seen["chunk"].append, RELIABLE_QOS)
        sub(ExecutorStatus, "/rotvla/executor_status", self.seen["status"].append, RELIABLE_QOS)
        sub(JointState, "/joint_states", self.seen["joints"].append, SENSOR_QOS)
        sub(Bool, "/sim/task_success", self.seen["success"].append, RELIABLE_QOS)
        sub(Clock, "/clock", lambda m: self.seen["clock"].append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.mark.timeout(420)
def test_the_simulated_stack_runs_the_expert_to_success_and_shuts_down_cleanly(rclpy_context, peer_factory):
    """The MuJoCo cell (cup stacking, both arms), the executor (teleop from the sim's scripted
    expert, through its safety filter), camera ingestion and the policy node (tiny
    checkpoint) in one process."""
    runner = peer_factory(
        sys.executable,
        "-m",
        "rotvla_ros.nodes.runner",
        "--checkpoint",
        str(REPO_ROOT / "models" / "tiny-random"),
        "--expert",
        "--task",
        "cup_stacking",
        "--seed",
        "1",
    )
    observer = Observer()
    try:
        seen = observer.seen
        assert observer.spin_until(lambda: len(seen["chunk"]) >= 3, 240), "".join(runner.lines[-40:])
        assert observer.spin_until(lambda: any(m.data for m in seen["success"]), 120), "".join(runner.lines[-40:])
        # Cameras as realsense2_camera publishes them, stamped on sim time.
        image = seen["image"][-1]
        assert (image.width, image.height, image.encoding) == (320, 240, "rgb8")
        assert image.header.frame_id == "head_color_optical_frame" and seen["info"][-1].k[0] > 0
        clock = seen["clock"][-1]
        assert abs(image.header.stamp.sec + image.header.stamp.nanosec * 1e-9 - clock) < 1.0
        # The policy served chunks; the executor was driven by the expert (chunks refused).
        status = seen["status"][-1]
        assert status.mode == ExecutorStatus.MODE_TELEOP and status.last_rejection_reason.startswith("teleop")
        assert seen["chunk"][-1].checkpoint_id.startswith("tiny-random")
        # Both arms moved (the cups are a dual-arm task), and no joint ever left its limits.
        positions = np.array([m.position for m in seen["joints"]])
        names = list(seen["joints"][-1].name)
        for arm in ("left", "right"):
            joints = positions[:, [names.index(f"{arm}_joint{i}") for i in range(1, 7)]]
            assert np.abs(joints - joints[0]).max() > 0.3, arm
        for _k, joint in enumerate(f"joint{i}" for i in range(1, 7)):
            lower, upper = R5_JOINT_LIMITS[joint]
            for arm in ("left", "right"):
                column = positions[:, names.index(f"{arm}_{joint}")]
                assert (column >= lower - 0.02).all() and (column <= upper + 0.02).all()
    finally:
        observer.close()
    runner.proc.send_signal(signal.SIGINT)
    assert runner.proc.wait(timeout=60) == 0, "".join(runner.lines[-40:])
    assert not any("Traceback" in line for line in runner.lines), "".join(runner.lines[-60:])


@pytest.mark.timeout(420)
def test_the_policy_drives_the_operator_takes_over_and_the_recording_marks_the_intervention(
    rclpy_context, peer_factory, tmp_path
):
    """No expert driving: the tiny checkpoint's chunks reach the executor in time to be
    executed (the policy runs in a process of its own, one torch thread: see
    NodeSpec.own_process). An episode is recorded; midway ``rotvla_ctl takeover`` hands the arms
    to the simulated operator (issue 28), which plans the rest of the task from wherever the
    random policy left the arms and the block, and finishes it, the policy's chunks refused
    meanwhile. Converted, the episode's ``intervention`` column marks exactly the frames after
    the switch the executor reported (within one status period of it)."""
    from rotvla_common.contract import CONTROL_SOURCES
    from rotvla_msgs.srv import StartEpisode, StopEpisode
    from rotvla_ros.data.convert import ConversionConfig, read_episode

    runner = peer_factory(
        sys.executable,
        "-m",
        "rotvla_ros.nodes.runner",
        "--checkpoint",
        str(REPO_ROOT / "models" / "tiny-random"),
        "--task",
        "block_to_plate",
        "--operator",
        "--record",
        "--ros-args",
        "-p",
        f"output_dir:={tmp_path / 'episodes'}",
    )
    observer = Observer()
    try:
        seen = observer.seen
        executing = lambda: any(m.executed_steps >= 100 for m in seen["status"])  # noqa: E731
        assert observer.spin_until(executing, 200), "".join(runner.lines[-40:])
        assert seen["status"][-1].mode in (ExecutorStatus.MODE_EXECUTING, ExecutorStatus.MODE_HOLDING)
        chunks = seen["chunk"]
        assert len(chunks) >= 5 and all(c.checkpoint_id.startswith("tiny-random") for c in chunks)
        # Most chunks are taken (a loaded machine may make one stale now and then, never most).
        status = seen["status"][-1]
        assert status.chunks_rejected <= len(chunks) // 2, status
        assert status.control_source == "policy" and not any(m.data for m in seen["success"])

        def call(srv_type, name, request):
            client = observer.node.create_client(srv_type, name)
            assert client.wait_for_service(timeout_sec=30)
            future = client.call_async(request)
            assert observer.spin_until(future.done, 60)
            return future.result()

        started = call(StartEpisode, "/rotvla/recorder/start", StartEpisode.Request(task="block_to_plate"))
        assert started.success, started.message
        recording_from = seen["clock"][-1]
        assert observer.spin_until(lambda: seen["clock"][-1] > recording_from + 3.0, 60)  # 3 s of the policy

        ctl = subprocess.run(
            [sys.executable, "-m", "rotvla_ros.nodes.rotvla_ctl", "takeover"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ctl.returncode == 0 and "teleop drives" in ctl.stdout, ctl.stdout + ctl.stderr
        assert observer.spin_until(lambda: any(m.data for m in seen["success"]), 120), "".join(runner.lines[-40:])
        status = seen["status"][-1]
        assert status.mode == ExecutorStatus.MODE_TELEOP and status.control_source == "teleop"
        assert status.last_rejection_reason.startswith("teleop")  # the policy's chunks, refused
        stopped = call(StopEpisode, "/rotvla/recorder/stop", StopEpisode.Request(task_success=True))
        assert stopped.success, stopped.message
        switched = min(
            m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in seen["status"] if m.control_source == "teleop"
        )
        before = max(
            m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            for m in seen["status"]
            if m.control_source == "policy" and m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 < switched
        )
    finally:
        observer.close()
    runner.proc.send_signal(signal.SIGINT)
    assert runner.proc.wait(timeout=60) == 0, "".join(runner.lines[-40:])

    episode = read_episode(Path(stopped.path), ConversionConfig())
    times = episode.start_time + episode.timestamps  # (T,) on the executor's (sim) clock
    teleop = episode.sources == CONTROL_SOURCES.index("teleop")
    assert episode.policy_drove and episode.intervention.any()
    assert np.array_equal(episode.intervention, teleop)  # the policy drove too: every operator frame corrects it
    certain = (times >= switched) | (times < before)  # frames between the two statuses may go either way
    assert np.array_equal(teleop[certain], times[certain] >= switched)


def test_every_name_the_launch_file_imports_from_the_workspace_exists():
    """The launch file runs only under launch_ros (not installable here): at least every name it
    takes from our packages must exist, or `ros2 launch` fails at once (it imported a CAMERAS
    that a refactoring had moved to rotvla_common.action_space)."""
    missing = []
    for node in ast.walk(ast.parse(LAUNCH_FILE.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("rotvla"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert not missing, missing


def test_the_launch_file_and_the_runner_share_one_node_set():
    """Where launch_ros is importable the launch file is expanded for real and its nodes
    compared with the description; everywhere, the file must build its nodes from the shared
    description (not a list of its own) and declare an argument for each option."""
    source = LAUNCH_FILE.read_text()
    assert "node_set(args)" in source and "parameter_files(" in source
    assert "launch_ros.actions" in source and "Node(" in source
    assert "LAUNCH_ARGUMENTS.items()" in source and "system_args_from_launch(" in source
    arguments = set(LAUNCH_ARGUMENTS)
    assert {"sim", "task", "checkpoint", "instruction", "record", "device"} <= arguments
    assert {"head_serial", "left_wrist_serial", "right_wrist_serial", "left_can", "right_can"} <= arguments
    runner = (REPO_ROOT / "src/rotvla_ros/rotvla_ros/nodes/runner.py").read_text()
    assert "node_set(" in runner and "parameter_files(" in runner

    sim_nodes = {spec.name for spec in node_set(SystemArgs(sim=True))}
    assert sim_nodes == {"sim", "arx_r5_executor", "camera_ingestion", "policy", "status_monitor"}
    assert "sim" not in {spec.name for spec in node_set(SystemArgs(sim=False))}
    for args in (SystemArgs(sim=True, task="cup_stacking"), SystemArgs(sim=False)):
        for path in parameter_files(REPO_ROOT / "config", args):
            assert path.is_file(), path

    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not installed (scripts/setup.sh installs it from ../shared/ros2-launch)")
    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("bringup_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    for entity in description.entities:
        entity.visit(context)
    actions = module._actions(context)
    from launch_ros.actions import Node

    def text(value) -> str:  # a str, or launch substitutions (TextSubstitution) before they are performed
        return value if isinstance(value, str) else "".join(getattr(part, "text", "") for part in value)

    # node_name is only known once the action has run (launch_ros raises before); package and
    # executable are known now.
    launched = {(text(a.node_package), text(a.node_executable)) for a in actions if isinstance(a, Node)}
    assert launched == {(spec.package, spec.executable) for spec in node_set(SystemArgs(sim=True))}


def test_launch_arguments_become_the_system_they_name():
    """Each argument's value as the nodes get it; bad values and unknown names are refused with
    the name (the same checks run under the real ``ros2 launch`` in test_launch.py)."""
    from rotvla_ros.bringup import LaunchArgumentError, system_args_from_launch

    defaults = {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    args = system_args_from_launch(defaults)
    assert (args.sim, args.task, args.seed, args.expert, args.policy, args.record_episodes) == (
        True,
        "block_to_plate",
        0,
        False,
        True,
        False,
    )
    assert args.can_ports == {} and args.namespace == "" and args.checkpoint == ""
    given = {
        **defaults,
        "sim": "False",
        "expert": "1",
        "seed": "12",
        "shift": "distractors,table",
        "left_can": "can7",
        "namespace": "cell1/",
        "checkpoint": str(REPO_ROOT / "models" / "tiny-random" / ".." / "tiny-random"),
    }
    args = system_args_from_launch(given)
    assert (args.sim, args.expert, args.policy, args.seed) == (False, True, False, 12)  # the expert drives: no policy
    assert args.shift == "table,distractors" and system_args_from_launch(defaults).shift == "none"
    assert args.can_ports == {"left": "can7"} and args.namespace == "/cell1"
    assert args.checkpoint == str(REPO_ROOT / "models" / "tiny-random")
    # operator:=true: the policy drives, the scripted expert stands by as the operator.
    operated = system_args_from_launch({**defaults, "operator": "true"})
    specs = {spec.name: spec for spec in node_set(operated)}
    assert operated.operator and operated.policy and "policy" in specs
    assert specs["sim"].parameters["expert"] is True and "control_source" not in specs["arx_r5_executor"].parameters
    dry = {spec.name: spec for spec in node_set(system_args_from_launch({**defaults, "dry_run": "true"}))}
    assert dry["arx_r5_executor"].parameters["dry_run"] is True
    assert "dry_run" not in specs["arx_r5_executor"].parameters
    # executor_state: how far the executor's lifecycle goes by itself (active: its default, unsaid).
    waiting = {
        spec.name: spec for spec in node_set(system_args_from_launch({**defaults, "executor_state": "inactive"}))
    }
    assert waiting["arx_r5_executor"].parameters["initial_state"] == "inactive"
    assert "initial_state" not in specs["arx_r5_executor"].parameters
    # policy:=false: nothing sends chunks (the latency calibration sends them in its place).
    quiet = system_args_from_launch({**defaults, "policy": "false"})
    assert not quiet.policy and "policy" not in {spec.name for spec in node_set(quiet)}
    # params_file: applied after the config's files (a calibration's overlay wins over robot.yaml).
    overlay = REPO_ROOT / "config" / "robot.yaml"
    calibrated = system_args_from_launch({**defaults, "sim": "false", "params_file": str(overlay)})
    assert parameter_files(REPO_ROOT / "config", calibrated)[-1] == overlay
    with pytest.raises(LaunchArgumentError, match="params_file"):
        system_args_from_launch({**defaults, "params_file": "no/such/file.yaml"})
    for name, value in (
        ("sim", "ture"),
        ("seed", "1.5"),
        ("task", "cups"),
        ("right_can", "a" * 16),
        ("taks", "x"),
        ("shift", "fog"),
        ("operator", "maybe"),
        ("dry_run", "yes please"),
        ("executor_state", "asleep"),
    ):
        with pytest.raises(LaunchArgumentError, match=name):
            system_args_from_launch({**defaults, name: value})


def test_parameter_files_resolve_for_a_node_as_rcl_resolves_them(rclpy_context, tmp_path):
    """The composed runner builds its nodes from ``read_parameter_files``; launch hands the same
    files to rcl. Both must give a node the same values, in the root namespace and in another:
    the sections keyed /**/<node>, the overrides file last, ``/**`` losing to a node section
    whatever the file order, a bare node name matching the root namespace only."""
    from rotvla_common.parameters import read_parameter_files, write_overrides

    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "/**:\n  ros__parameters:\n    max_observation_age: 9.0\n    only_root_section: 1\n"
        "policy:\n  ros__parameters:\n    only_root_section: 2\n"
    )
    files = [*parameter_files(REPO_ROOT / "config", SystemArgs(sim=True)), extra]
    files.append(write_overrides("policy", {"device": "cuda:1", "left.base_xyz": [1.0, 2.0, 3.0]}, tmp_path))
    for namespace in ("", "/cell1"):
        cli = ["--ros-args", *[a for f in files for a in ("--params-file", str(f))]]
        if namespace:
            cli += ["-r", f"__ns:={namespace}"]
        node = Node("policy", cli_args=cli, automatically_declare_parameters_from_overrides=True)
        try:
            rcl = {
                name: p.value
                for name, p in node.get_parameters_by_prefix("").items()
                if name not in ("use_sim_time", "start_type_description_service")
            }
        finally:
            node.destroy_node()
        ours = read_parameter_files(files, "policy", namespace)
        ours.pop("use_sim_time")
        assert {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in rcl.items()} == ours, namespace
        assert ours["device"] == "cuda:1" and ours["left.base_xyz"] == [1.0, 2.0, 3.0]
        assert ours["max_observation_age"] == 0.6  # the policy's section (sim.yaml) beats a later /**
        assert ours["only_root_section"] == (2 if not namespace else 1)


def other_backends_parameters(values: dict) -> set[str]:
    """The executor's parameters that belong only to backends other than ``values["backend"]``."""
    from arx_r5_driver.backends import available_backends, backend_class

    def names(backend: str) -> set[str]:
        cls = backend_class(backend)
        return set(cls.PARAMETERS) | {f"{arm}.{name}" for arm in values["arms"] for name in cls.ARM_PARAMETERS}

    return set().union(*(names(b) for b in available_backends() if b != values["backend"])) - names(values["backend"])


def test_the_policy_is_given_the_instruction_the_simulated_task_was_recorded_with():
    """One owner (the task's module, sim.tasks): the instruction the bringup gives the policy
    node for a task is the one the simulated scene (and so every recorded demonstration)
    carries, and the sim node is given the task; a launch argument overrides the instruction;
    no config file holds a copy of either."""
    from rotvla_common.parameters import read_parameter_files
    from rotvla_ros.sim.tasks import TASKS

    for task in TASKS:
        nodes = {spec.name: spec for spec in node_set(SystemArgs(sim=True, task=task))}
        policy = nodes["policy"]
        assert nodes["sim"].parameters["task"] == task
        assert policy.parameters["instruction"] == TASKS[task].instruction
        on_robot = next(spec for spec in node_set(SystemArgs(sim=False, task=task)) if spec.name == "policy")
        assert on_robot.parameters["instruction"] == TASKS[task].instruction
        files = parameter_files(REPO_ROOT / "config", SystemArgs(sim=True, task=task))
        assert "instruction" not in read_parameter_files(files, "policy")
    spec = next(s for s in node_set(SystemArgs(sim=True, instruction="wave")) if s.name == "policy")
    assert spec.parameters["instruction"] == "wave"


@pytest.mark.parametrize("task", ["block_to_plate", "cup_stacking"])
def test_each_node_built_from_the_config_files_has_their_values(task, rclpy_context):
    """A misspelt key in a YAML file would be silently ignored by ROS, and a code default that
    disagrees with the file would give a node started without it another robot: every node of
    the simulated bringup is built from the files (as the runner and launch build it), and
    every key of its sections (and /**) must be a parameter it declares, with the file's value."""

    from arx_r5_driver.configuration import ARM_PARAMETERS, PARAMETERS
    from rotvla_common.parameters import read_parameter_files
    from rotvla_ros.nodes.runner import build

    args = SystemArgs(sim=True, task=task, checkpoint="", status=False)
    files = parameter_files(REPO_ROOT / "config", args)
    shared = read_parameter_files(files, "")  # the /** sections alone
    declared_somewhere = {"use_sim_time"}
    for spec in node_set(args):
        if spec.name == "policy":
            spec = type(spec)(**{**spec.__dict__, "parameters": {}})  # no checkpoint to load here
        values = read_parameter_files(files, spec.name)
        own = {name for name, value in values.items() if name not in shared or shared[name] != value}
        node = build(spec, files)
        unused = other_backends_parameters(values) if spec.name == "arx_r5_executor" else set()
        try:
            for name, value in values.items():
                if name not in own and not node.has_parameter(name):
                    continue  # a /** entry another node takes
                if name in unused:
                    continue  # the robot's CAN ports, when the sim's topic backend runs
                assert node.has_parameter(name), f"{spec.name} declares no parameter {name} (files: {files})"
                declared_somewhere.add(name)
                got = node.get_parameter(name).value
                assert got == value or (isinstance(value, list) and list(got) == value), (spec.name, name, got, value)
        finally:
            node.destroy_node()
    assert set(shared) <= declared_somewhere, f"/** keys no node declares: {sorted(set(shared) - declared_somewhere)}"
    # The executor's code defaults are the robot file's values: a node started without it is still this robot.
    robot = read_parameter_files([REPO_ROOT / "config" / "robot.yaml"], "arx_r5_executor")
    for name, (default, _) in PARAMETERS.items():
        if name in robot:
            assert default == robot[name], (
                f"arx_r5_executor default {name}={default} but config/robot.yaml has {robot[name]}"
            )
    for arm in robot["arms"]:
        for name, (default, _) in ARM_PARAMETERS.items():
            key = f"{arm}.{name}"
            if key in robot and default is not None:
                assert default == robot[key], f"default {key}={default} but config/robot.yaml has {robot[key]}"
    # And the policy's and the camera ingestion's (their parameter tables), but the policy's
    # contract checks, whose default 0 means "not checked" (a bare node serves any checkpoint).
    from rotvla_ros.nodes import camera_ingestion, policy_node

    not_checked = {("policy", "image_size"), ("policy", "step_period")}
    for node_name, table in (("camera_ingestion", camera_ingestion.PARAMETERS), ("policy", policy_node.PARAMETERS)):
        robot = read_parameter_files([REPO_ROOT / "config" / "robot.yaml"], node_name)
        compared = [name for name in table if name in robot and (node_name, name) not in not_checked]
        assert compared, node_name
        for name in compared:
            default = table[name].default
            assert default == robot[name], (
                f"{node_name} default {name}={default} but config/robot.yaml has {robot[name]}"
            )
        assert table["image_size"].default in (0, robot["image_size"])


@pytest.mark.timeout(300)
def test_two_simulated_cells_under_two_namespaces_do_not_see_each_other(rclpy_context, peer_factory):
    """Two whole simulated cells (sim, executor, camera ingestion, status) side by side, each
    under its own namespace: each runs on its own clock, makes its own observations, and a chunk
    sent to one reaches that cell's executor only; nothing is left in the root namespace."""
    from diagnostic_msgs.msg import DiagnosticArray

    from rotvla_msgs.msg import Observation

    cells = ("cell_a", "cell_b")
    runners = {
        cell: peer_factory(sys.executable, "-m", "rotvla_ros.nodes.runner", "--no-policy", "--namespace", cell)
        for cell in cells
    }
    node = Node("namespace_observer")
    seen = {(cell, kind): [] for cell in (*cells, "") for kind in ("clock", "status", "observation", "diagnostics")}
    for cell in (*cells, ""):
        prefix = f"/{cell}" if cell else ""
        on_clock = lambda m, c=cell: seen[c, "clock"].append(m.clock.sec + m.clock.nanosec * 1e-9)  # noqa: E731
        node.create_subscription(Clock, f"{prefix}/clock", on_clock, 10)
        node.create_subscription(
            ExecutorStatus, f"{prefix}/rotvla/executor_status", seen[cell, "status"].append, RELIABLE_QOS
        )
        node.create_subscription(
            Observation, f"{prefix}/rotvla/observation", seen[cell, "observation"].append, SENSOR_QOS
        )

    def on_diagnostics(msg):
        for status in msg.status:
            cell = status.hardware_id.split("/")[1] if status.hardware_id.count("/") > 1 else ""
            seen.setdefault((cell, "diagnostics"), []).append(status)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, RELIABLE_QOS)
    chunk_publisher = node.create_publisher(ActionChunk, "/cell_a/rotvla/action_chunk", RELIABLE_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    spin_until = functools.partial(spin_until_on, executor)

    def logs():
        return "\n".join(f"--- {cell}\n" + "".join(r.lines[-20:]) for cell, r in runners.items())

    try:
        ready = lambda: all(seen[c, "observation"] and seen[c, "status"] for c in cells)  # noqa: E731
        assert spin_until(ready, 180), logs()
        # A stale chunk (stamped at 0) into cell_a: its executor counts the rejection.
        chunk = ActionChunk(sequence=1, checkpoint_id="namespace-test", horizon=1, action_names=["left/x"])
        chunk.actions = [0.3]
        chunk.dt.nanosec = 100_000_000
        rejected = lambda c: seen[c, "status"][-1].chunks_rejected  # noqa: E731
        assert spin_until(lambda: (chunk_publisher.publish(chunk), rejected("cell_a") >= 1)[1], 20), logs()
        spin_until(lambda: False, 2.0)  # statuses published after the chunk reached everyone it could
        assert rejected("cell_b") == 0 and seen["cell_b", "status"][-1].chunks_accepted == 0
        # Each cell's time is its own: its executor's clock never jumped back.
        for cell in cells:
            executor_status = [s for s in seen[cell, "diagnostics"] if s.name == "rotvla/executor"]
            assert executor_status, cell
            values = {kv.key: kv.value for kv in executor_status[-1].values}
            assert values["time_resets"] == "0", (cell, values)
            clock = seen[cell, "clock"]
            assert len(clock) > 10 and all(b >= a for a, b in zip(clock, clock[1:])), cell
        # Nothing of either cell in the root namespace.
        assert not seen["", "clock"] and not seen["", "status"] and not seen["", "observation"]
    finally:
        executor.shutdown()
        node.destroy_node()
    for runner in runners.values():
        runner.proc.send_signal(signal.SIGINT)
        assert runner.proc.wait(timeout=60) == 0, logs()
