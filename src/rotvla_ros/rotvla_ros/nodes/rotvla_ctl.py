"""rotvla_ctl: swap checkpoints and set instructions without typing service YAML.

rotvla_ctl load /path/to/checkpoint [--device cuda] [--dtype bfloat16]
rotvla_ctl instruct "put the block into the drawer and close the drawer"
rotvla_ctl estop | resume
rotvla_ctl takeover | handback     (teleop takes the arms from the policy, and gives them back)
rotvla_ctl home                    (both arms to the ready pose, under the caps; then held)
A namespaced cell: append ``--ros-args -r __ns:=/cell_a``. A relative checkpoint path is the
caller's: it is made absolute here, before the policy node (another working directory) sees it.
"""

from __future__ import annotations

import argparse
import os
import sys

import rclpy
from rclpy.node import Node
from rotvla_common import topics
from rotvla_msgs.srv import LoadCheckpoint, SetControlSource, SetInstruction
from std_srvs.srv import Trigger


def call(node: Node, srv_type, name: str, request, timeout: float):
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=min(timeout, 10.0)):
        raise TimeoutError(
            f"service {node.resolve_service_name(name)} is not available (is the stack running, in this namespace?)"
        )
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        raise TimeoutError(f"{name} did not answer within {timeout} s")
    return future.result()


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
    args, ros_args = parser.parse_known_args(argv)

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = Node("rotvla_ctl")
    try:
        if args.command == "load":
            path = os.path.abspath(os.path.expanduser(args.path))
            request = LoadCheckpoint.Request(path=path, device=args.device, dtype=args.dtype)
            result = call(node, LoadCheckpoint, topics.LOAD_CHECKPOINT, request, args.timeout)
            print(result.message)
            if result.success:
                print(
                    f"checkpoint {result.checkpoint_id} (was {result.previous_checkpoint_id or 'none'}): "
                    f"loaded in {result.load_seconds:.2f} s, warmed up in {result.warmup_seconds:.2f} s"
                )
        elif args.command == "instruct":
            request = SetInstruction.Request(instruction=args.instruction)
            result = call(node, SetInstruction, topics.SET_INSTRUCTION, request, args.timeout)
            print(f"{result.message} (was {result.previous_instruction!r})")
        elif args.command in ("takeover", "handback", "home"):
            source = {"takeover": "teleop", "handback": "policy", "home": "home"}[args.command]
            request = SetControlSource.Request(source=source)
            result = call(node, SetControlSource, topics.SET_CONTROL_SOURCE, request, args.timeout)
            print(result.message)
        else:
            name = topics.ESTOP if args.command == "estop" else topics.RESUME
            result = call(node, Trigger, name, Trigger.Request(), args.timeout)
            print(result.message)
        return 0 if result.success else 1
    except TimeoutError as error:
        print(f"rotvla_ctl: {error}", file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
