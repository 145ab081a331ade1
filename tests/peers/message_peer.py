"""A second process for the message tests: publishes a filled instance of every rotvla_msgs
message type on /rotvla_test/<Type> and serves every service type on /rotvla_test/<Srv>.
A service answers the filled response only when the request equals the filled request, and
an empty response otherwise, so the caller sees both directions.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.node import Node  # noqa: E402
from ros_samples import fill, rotvla_message_types, rotvla_service_types  # noqa: E402

SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 0


def main():
    rclpy.init()
    node = Node("rotvla_message_peer")
    publishers = {
        name: (node.create_publisher(cls, f"/rotvla_test/{name}", 10), fill(cls, SEED))
        for name, cls in rotvla_message_types().items()
    }

    def make_handler(srv_cls):
        expected = fill(srv_cls.Request, SEED)

        def handle(request, response):
            if request == expected:
                return fill(srv_cls.Response, SEED)
            return response

        return handle

    services = [  # noqa: F841  (kept alive)
        node.create_service(cls, f"/rotvla_test/{name}", make_handler(cls))
        for name, cls in rotvla_service_types().items()
    ]

    def publish_all():
        for publisher, msg in publishers.values():
            publisher.publish(msg)

    node.create_timer(0.05, publish_all)
    print("peer ready", flush=True)
    try:
        # Not rclpy.spin: rclpy's SIGTERM handler shuts the context down but does not always
        # wake a single-threaded wait (see rotvla_common.ros.run_node).
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.25)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
