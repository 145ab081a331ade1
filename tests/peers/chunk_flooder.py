"""A peer that is not the policy: floods /rotvla/action_chunk with well-formed chunks (the arms'
home pose, fresh stamps, ever higher sequence numbers) at RATE a second for SECONDS, the way
a stray or hostile participant on the robot's network would. Prints "ready", then "sent N".

    python chunk_flooder.py RATE SECONDS
"""

import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.serialization import serialize_message

from arx_r5_driver.configuration import HOME_JOINTS
from arx_r5_driver.kinematics import ArmKinematics
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.ros import RELIABLE_QOS, to_duration
from rotvla_msgs.msg import ActionChunk


def main():
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = Node("chunk_flooder")
    publisher = node.create_publisher(ActionChunk, "/rotvla/action_chunk", RELIABLE_QOS)
    position, rotation = ArmKinematics().fk(np.array(HOME_JOINTS))
    row = np.r_[position + [0.05, 0.0, 0.05], rotation[:, 0], rotation[:, 1], 0.0]  # somewhere else
    msg = ActionChunk(horizon=8, action_names=list(DUAL_ARM_EEF_ACTION_NAMES), checkpoint_id="not-the-policy")
    msg.actions = np.tile(np.r_[row, row], 8).astype(np.float32).tolist()
    msg.dt = to_duration(0.05)
    print("ready", flush=True)
    sent, start = 0, time.monotonic()
    serialized, refreshed = b"", -1.0
    while (elapsed := time.monotonic() - start) < seconds:
        if elapsed - refreshed > 0.05:  # a fresh stamp and sequence, serialized once for many sends
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.sequence = 10**9 + sent
            serialized, refreshed = serialize_message(msg), elapsed
        publisher.publish(serialized)
        sent += 1
        lag = sent / rate - (time.monotonic() - start)
        if lag > 0:
            time.sleep(lag)
    print(f"sent {sent}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
