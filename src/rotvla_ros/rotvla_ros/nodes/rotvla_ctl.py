"""rotvla_ctl: swap checkpoints and set instructions without typing service YAML.

rotvla_ctl load /path/to/checkpoint [--device cuda] [--dtype bfloat16]
rotvla_ctl instruct "put the block into the drawer and close the drawer"
rotvla_ctl estop | resume
rotvla_ctl takeover | handback     (teleop takes the arms from the policy, and gives them back)
rotvla_ctl home                    (both arms to the ready pose, under the caps; then held)
rotvla_ctl reset [--seed N]        (between episodes: the simulated cell resets to a seed; on the
                                    robot both arms home, and it returns once they are there)
rotvla_ctl reset --task cup_stacking [--seed N]
                                   (simulation: another task's scene, and the policy told its
                                    instruction: a multi-task checkpoint switches task live)
A namespaced cell: append ``--ros-args -r __ns:=/cell_a``. A relative checkpoint path is the
caller's: it is made absolute here, before the policy node (another working directory) sees it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.parameter import parameter_value_to_python
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from rotvla_common import topics
from rotvla_common.ros import SENSOR_QOS
from rotvla_msgs.srv import LoadCheckpoint, ResetSimulation, SetControlSource, SetInstruction

from .common import GraphClient, ServiceUnavailable

HOMED_TOLERANCE = 0.02  # rad: every joint this close to its ready position


def reset(client: GraphClient, seed: int, timeout: float, task: str = "") -> tuple[bool, str]:
    """The cell back to the start of an episode: the simulation to ``seed`` (its /sim/reset;
    with ``task``, that task's scene, and the policy given its instruction), or, on the robot,
    both arms to their ready pose (homing, under the caps), waited for in the joint states;
    objects are a person's to put back."""
    # Whichever of the cell's two resets appears: the simulation's, or the executor's homing.
    simulation = client.client(ResetSimulation, topics.SIM_RESET)
    homing = client.client(SetControlSource, topics.SET_CONTROL_SOURCE)
    client.spin_for(min(timeout, 10.0), lambda: simulation.service_is_ready() or homing.service_is_ready())
    if simulation.service_is_ready():
        request = ResetSimulation.Request(seed=seed, task=task)
        result = client.require(ResetSimulation, topics.SIM_RESET, request, timeout)
        if not (task and result.success):
            return result.success, result.message
        told = client.require(
            SetInstruction, topics.SET_INSTRUCTION, SetInstruction.Request(instruction=result.instruction)
        )
        return told.success, f"{result.message}; policy: {told.message}"
    if task:
        return False, "--task switches a simulated cell's scene; on the robot, set the scene and use instruct"
    executor = "arx_r5_executor"
    arms = client.require(GetParameters, f"{executor}/get_parameters", GetParameters.Request(names=["arms"]))
    arm_names = parameter_value_to_python(arms.values[0])
    names = [f"{arm}.ready_joints" for arm in arm_names]
    got = client.require(GetParameters, f"{executor}/get_parameters", GetParameters.Request(names=names))
    ready = {
        f"{arm}_joint{i + 1}": q
        for arm, value in zip(arm_names, got.values)
        for i, q in enumerate(parameter_value_to_python(value))
    }
    latest: dict[str, float] = {}
    client.node.create_subscription(
        JointState, topics.JOINT_STATES, lambda m: latest.update(zip(m.name, m.position)), SENSOR_QOS
    )
    result = client.require(SetControlSource, topics.SET_CONTROL_SOURCE, SetControlSource.Request(source="home"))
    if not result.success:
        return False, result.message
    started = time.monotonic()

    def error() -> float:
        return max((abs(latest[n] - q) if n in latest else np.inf) for n, q in ready.items())

    client.spin_for(timeout, lambda: error() <= HOMED_TOLERANCE)
    took = time.monotonic() - started
    if error() > HOMED_TOLERANCE:
        return False, f"{result.message}; not there after {took:.1f} s (largest joint error {error():.3f} rad)"
    return True, f"{result.message}; there after {took:.1f} s (largest joint error {error():.3f} rad), held"


def instruction_text(value: str) -> str:
    """argparse type: an instruction with words in it."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the instruction is empty")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rotvla_ctl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="swap the policy's checkpoint (the old one serves until the new one is ready)")
    load.add_argument("path")
    load.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: the node's)")
    load.add_argument("--dtype", default="", help="bfloat16, float16, float32 (default: the node's)")
    load.add_argument("--timeout", type=float, default=600.0)
    instruct = sub.add_parser("instruct", help="set the language instruction")
    instruct.add_argument("instruction", type=instruction_text)
    instruct.add_argument("--timeout", type=float, default=10.0)
    for name, text in (
        ("estop", "hold both arms at once; chunks are refused until resume"),
        ("resume", "end an e-stop"),
        ("takeover", "teleop (the leader arms, the simulated operator) drives; the policy's chunks are refused"),
        ("handback", "the policy drives again, from where teleop left the arms"),
        ("home", "both arms to the ready pose under the caps, then held until handback or takeover"),
    ):
        sub.add_parser(name, help=text).add_argument("--timeout", type=float, default=10.0)
    between = sub.add_parser("reset", help="between episodes: the sim to a seed; the robot's arms home (waited for)")
    between.add_argument("--seed", type=int, default=0, help="simulation: the scene's seed")
    between.add_argument("--task", default="", help="simulation: another task's scene, the policy told its instruction")
    between.add_argument("--timeout", type=float, default=60.0)
    args, ros_args = parser.parse_known_args(argv)

    rclpy.init(args=[sys.argv[0], *ros_args])
    client = GraphClient("rotvla_ctl")
    try:
        if args.command == "load":
            path = os.path.abspath(os.path.expanduser(args.path))
            request = LoadCheckpoint.Request(path=path, device=args.device, dtype=args.dtype)
            result = client.require(LoadCheckpoint, topics.LOAD_CHECKPOINT, request, args.timeout)
            print(result.message)
            if result.success:
                print(
                    f"checkpoint {result.checkpoint_id} (was {result.previous_checkpoint_id or 'none'}): "
                    f"loaded in {result.load_seconds:.2f} s, warmed up in {result.warmup_seconds:.2f} s"
                )
        elif args.command == "instruct":
            request = SetInstruction.Request(instruction=args.instruction)
            result = client.require(SetInstruction, topics.SET_INSTRUCTION, request, args.timeout)
            print(f"{result.message} (was {result.previous_instruction!r})")
        elif args.command == "reset":
            ok, message = reset(client, args.seed, args.timeout, args.task)
            print(message)
            return 0 if ok else 1
        elif args.command in ("takeover", "handback", "home"):
            source = {"takeover": "teleop", "handback": "policy", "home": "home"}[args.command]
            request = SetControlSource.Request(source=source)
            result = client.require(SetControlSource, topics.SET_CONTROL_SOURCE, request, args.timeout)
            print(result.message)
        else:
            name = topics.ESTOP if args.command == "estop" else topics.RESUME
            result = client.require(Trigger, name, Trigger.Request(), args.timeout)
            print(result.message)
        return 0 if result.success else 1
    except ServiceUnavailable as error:
        print(f"rotvla_ctl: {error}", file=sys.stderr)
        return 2
    finally:
        client.close()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
