"""Takeover and hand-back at 200 Hz, measured on the executor's send clock (issue 28's
target: no command beyond the speed caps and no gap over two control periods at a switch).

The executor node runs as deployed (its own process, wall clock, the robot's parameters from
config/robot.yaml) on the ``topic`` backend, so that every joint command it sends arrives
here with the stamp it was sent at. This process plays the rest of the cell: arms that
reach each command at once (their state, at 50 Hz, is the last command), a policy streaming a chunk
every 0.1 s (both end effectors circling 4 cm about their start), and a teleop source moving
about another pose (a leader arm a few centimetres off: the caps are what brings the
followers to it). Every ``--every`` seconds it switches the source by the service
(/rotvla/set_control_source), ``--switches`` times.

Reported per arm, in the windows around the switches (0.1 s before the call to 0.5 s after
its answer) and elsewhere: the largest joint speed over the caps and end-effector speed over
the cap, both between consecutive commands by their own stamps, and the largest gap between
commands in control periods.
Usage: python benchmarks/bench_takeover.py [--switches 10] [--every 2.0]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import executor_command, print_table  # noqa: E402

NODE = "bench_takeover"
PERIOD = 0.005  # config/robot.yaml: control_rate 200 Hz
JOINT_CAP = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])  # config/robot.yaml: max_joint_velocity
CARTESIAN_CAP = 0.5  # config/robot.yaml: max_cartesian_speed
HOME = np.array([0.0, -1.9, -1.0, -0.5, 0.0, 0.0])  # the executor's home (HOME_JOINTS)


def run(switches: int, every: float) -> tuple[dict, list[tuple[float, float]]]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from arx_r5_driver.executor_node import HOME_JOINTS
    from arx_r5_driver.kinematics import ArmKinematics, joint_names
    from rotvla_common import topics
    from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES
    from rotvla_common.contract import eef_state
    from rotvla_common.ros import RELIABLE_QOS, to_duration, to_time
    from rotvla_msgs.msg import ActionChunk
    from rotvla_msgs.srv import SetControlSource

    assert np.allclose(HOME_JOINTS, HOME)
    executor = subprocess.Popen(
        executor_command(backend="topic", chunk_source=NODE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = Node(NODE)
    arms = ("left", "right")
    names = {arm: joint_names(arm) for arm in arms}
    kinematics = ArmKinematics()
    held = {arm: (HOME.copy(), 0.04) for arm in arms}  # the arms' state: the last command
    commands: dict[str, list] = {arm: [] for arm in arms}  # (send stamp, joints)
    lock = threading.Lock()

    def on_command(msg: JointState) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        index = {n: i for i, n in enumerate(msg.name)}
        with lock:
            for arm in arms:
                if all(n in index for n in names[arm]):
                    values = np.array([msg.position[index[n]] for n in names[arm]])
                    held[arm] = (values[:6], float(values[6]))
                    commands[arm].append((stamp, values[:6]))

    def joint_state(positions: dict) -> JointState:
        msg = JointState(name=[n for arm in arms for n in names[arm]])
        msg.position = [float(v) for arm in arms for v in (*positions[arm][0], positions[arm][1])]
        msg.header.stamp = node.get_clock().now().to_msg()
        return msg

    states = node.create_publisher(JointState, topics.SIM_JOINT_STATES, RELIABLE_QOS)
    teleop = node.create_publisher(JointState, topics.TELEOP_JOINT_TARGETS, RELIABLE_QOS)
    chunks = node.create_publisher(ActionChunk, topics.ACTION_CHUNK, RELIABLE_QOS)
    # Every command counts: a queue deep enough for seconds of them, should this process lag.
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2000, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(JointState, topics.SIM_JOINT_COMMANDS, on_command, deep)
    switch = node.create_client(SetControlSource, topics.SET_CONTROL_SOURCE)
    start = time.monotonic()
    position, rotation = kinematics.fk(HOME)

    def publish_state() -> None:
        with lock:
            states.publish(joint_state(held))

    def publish_teleop() -> None:
        phase = time.monotonic() - start
        leader = HOME + np.array([0.15, 0.1, 0.0, 0.1, 0.0, 0.0]) * np.sin(0.8 * phase)
        teleop.publish(joint_state({arm: (leader, 0.03) for arm in arms}))

    sequence = iter(range(1, 10**9))

    def publish_chunk() -> None:
        now = node.get_clock().now().nanoseconds * 1e-9
        phase = time.monotonic() - start + 0.1 * np.arange(16)  # (H,)
        circle = 0.04 * np.stack([np.cos(phase) - 1, np.sin(phase), np.zeros_like(phase)], axis=1)  # (H, 3)
        row = np.stack([eef_state(position + offset, rotation, 0.04) for offset in circle])  # (H, 10)
        actions = np.concatenate([row, row], axis=1).astype(np.float32)  # (H, 20)
        msg = ActionChunk(
            sequence=next(sequence), checkpoint_id="bench", horizon=16, action_names=list(DUAL_ARM_EEF_ACTION_NAMES)
        )
        msg.header.stamp = to_time(now)
        msg.dt = to_duration(0.1)
        msg.actions = actions.ravel().tolist()
        chunks.publish(msg)

    # States and teleop at 50 Hz: the executor commands from its own last command (the states
    # are for resynchronising), and a Python process beside it on 2 cores must keep up.
    node.create_timer(0.02, publish_state)
    node.create_timer(0.02, publish_teleop)
    node.create_timer(0.1, publish_chunk)
    spinner = SingleThreadedExecutor()
    spinner.add_node(node)
    thread = threading.Thread(target=spinner.spin, daemon=True)
    thread.start()
    windows = []
    try:
        if not switch.wait_for_service(timeout_sec=60):
            raise RuntimeError("the executor's set_control_source service never came up")
        time.sleep(every)
        for k in range(switches):
            called = node.get_clock().now().nanoseconds * 1e-9
            future = switch.call_async(SetControlSource.Request(source="teleop" if k % 2 == 0 else "policy"))
            while not future.done():
                time.sleep(0.001)
            if not future.result().success:
                raise RuntimeError(future.result().message)
            windows.append((called, node.get_clock().now().nanoseconds * 1e-9))
            time.sleep(every)
    finally:
        spinner.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        executor.terminate()
        executor.wait(timeout=30)
    return commands, windows


def analyse(commands: list, windows: list[tuple[float, float]]) -> dict[str, tuple[float, float, float]]:
    """{"switch" | "elsewhere": (max joint speed / cap, max EEF speed m/s, max gap / period)}."""
    from arx_r5_driver.kinematics import ArmKinematics

    kinematics = ArmKinematics()
    stamps = np.array([s for s, _ in commands])
    joints = np.array([q for _, q in commands])  # (N, 6)
    gaps = np.diff(stamps)  # (N-1,)
    joint_ratio = (np.abs(np.diff(joints, axis=0)) / gaps[:, None] / JOINT_CAP).max(1)
    tips = np.array([kinematics.fk(q)[0] for q in joints])
    tip_speed = np.linalg.norm(np.diff(tips, axis=0), axis=1) / gaps
    near = np.zeros(len(gaps), dtype=bool)
    for called, answered in windows:
        near |= (stamps[1:] >= called - 0.1) & (stamps[:-1] <= answered + 0.5)
    out = {}
    for label, mask in (("switch", near), ("elsewhere", ~near)):
        out[label] = (float(joint_ratio[mask].max()), float(tip_speed[mask].max()), float(gaps[mask].max() / PERIOD))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    commands, windows = run(args.switches, args.every)
    rows = []
    for arm, sent in commands.items():
        for label, (joint, tip, gap) in analyse(sent, windows).items():
            rows.append([arm, label, f"{joint:.2f}", f"{tip:.3f}", f"{gap:.1f}"])
    print_table(
        f"Takeover and hand-back ({args.switches} switches, 200 Hz, wall clock)",
        ["arm", "commands", "max joint speed / cap", "max EEF speed m/s", "max gap (periods)"],
        rows,
        [
            f"Caps: joints {JOINT_CAP.tolist()} rad/s, end effector {CARTESIAN_CAP} m/s; target at a switch: "
            "speed ratio <= 1, gap <= 2 periods.",
            "Speeds between consecutive commands by their own send stamps (the topic backend's header stamps).",
        ],
    )


if __name__ == "__main__":
    main()
