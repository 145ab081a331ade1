"""Camera ingestion node over DDS: controlled stamps on a simulated clock -> Observation only
for sets within slop and age, published as the frames arrive, with the robot state of their
capture; skewed and stale sets dropped and counted."""

import time

import numpy as np
import pytest

from conftest import wait_for

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from rotvla_msgs.msg import Observation  # noqa: E402
from rotvla_ros.ingest.images import fill_image  # noqa: E402
from rotvla_ros.nodes.camera_ingestion import CameraIngestionNode  # noqa: E402
from rotvla_ros.nodes.common import OBSERVATION_QOS, to_seconds, to_time  # noqa: E402

CAMERAS = ["head", "left_wrist", "right_wrist"]
ARMS = ["left", "right"]
# One encoding per camera, and one reliable publisher beside best-effort ones.
ENCODINGS = {"head": "rgb8", "left_wrist": "bgr8", "right_wrist": "mono8"}
COLOURS = {"head": (200, 30, 40), "left_wrist": (10, 220, 90), "right_wrist": (128, 128, 128)}


class Driver:
    def __init__(self, ros):
        self.node = ros.add(Node("ingestion_test_driver"))
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.images = {
            c: self.node.create_publisher(
                Image, f"/cameras/{c}/color/image_raw", reliable if c == "head" else best_effort
            )
            for c in CAMERAS
        }
        self.joints = self.node.create_publisher(JointState, "/joint_states", reliable)
        self.poses = {a: self.node.create_publisher(PoseStamped, f"/rotvla/eef_pose/{a}", reliable) for a in ARMS}
        self.clock = self.node.create_publisher(Clock, "/clock", reliable)
        self.observations, self.diagnostics = [], []
        self.node.create_subscription(Observation, "/rotvla/observation", self.observations.append, OBSERVATION_QOS)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if s.name == "rotvla/camera_ingestion"),
            10,
        )

    def tick(self, seconds: float):
        self.clock.publish(Clock(clock=to_time(seconds)))

    def frames(self, stamps: dict, size=(48, 64)):
        for camera, stamp in stamps.items():
            msg = fill_image(Image(), np.full(size + (3,), COLOURS[camera], np.uint8), ENCODINGS[camera])
            msg.header.stamp = to_time(stamp)
            msg.header.frame_id = f"{camera}_color_optical_frame"
            self.images[camera].publish(msg)

    def joint_state(self, stamp: float, position: float = 0.1):
        """The robot's state at ``stamp``: joint states and both EEF poses (x = ``position``)."""
        msg = JointState(name=["left/joint1"], position=[position])
        msg.header.stamp = to_time(stamp)
        self.joints.publish(msg)
        for arm, publisher in self.poses.items():
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = to_time(stamp), f"{arm}_base_link"
            pose.pose.position.x, pose.pose.orientation.w = position, 1.0
            publisher.publish(pose)


@pytest.fixture
def setup(ros):
    node = ros.add(
        CameraIngestionNode(
            parameter_overrides=[
                Parameter("use_sim_time", value=True),
                Parameter("step_period", value=0.05),
                Parameter("slop", value=0.02),
                Parameter("max_age", value=0.2),
                Parameter("state_max_offset", value=0.1),
                Parameter("image_size", value=32),
            ]
        )
    )
    driver = Driver(ros)
    assert wait_for(lambda: all(p.get_subscription_count() for p in driver.images.values()), 10)
    return node, driver


def advance(driver, start, end, step=0.01):
    t = start
    while t <= end + 1e-9:
        driver.tick(t)
        t += step
        time.sleep(0.003)


def received(node, counts):
    return all(node.sync.stats[c].received >= counts for c in CAMERAS)


def test_in_sync_set_is_published_with_capture_stamps_and_converted_images(setup):
    node, driver = setup
    driver.tick(100.0)
    driver.joint_state(100.0)
    driver.frames({"head": 100.000, "left_wrist": 100.005, "right_wrist": 100.010})
    assert wait_for(lambda: received(node, 1), 5)
    advance(driver, 100.02, 100.12)
    assert wait_for(lambda: len(driver.observations) == 1, 5)
    obs = driver.observations[0]
    assert to_seconds(obs.header.stamp) == pytest.approx(100.0)
    assert list(obs.camera_names) == CAMERAS
    assert [to_seconds(i.header.stamp) for i in obs.images] == pytest.approx([100.0, 100.005, 100.010])
    assert obs.sync_skew == pytest.approx(0.010)
    assert list(obs.joint_state.position) == [0.1]
    for camera, image in zip(CAMERAS, obs.images):
        assert (image.height, image.width, image.encoding) == (32, 32, "rgb8")
        assert image.header.frame_id == f"{camera}_color_optical_frame"
        pixels = np.frombuffer(image.data, np.uint8).reshape(32, 32, 3)
        np.testing.assert_array_equal(pixels[16, 16], COLOURS[camera])
    # Published once: more clock ticks without new frames publish nothing more.
    advance(driver, 100.13, 100.2)
    assert len(driver.observations) == 1


def test_a_set_is_published_as_its_frames_arrive_with_the_state_of_its_capture(setup):
    """No clock tick after the frames (the rate timer never fires): the last frame of the
    set publishes it. The state is the one at the capture stamp, not the newer one that
    arrived since (the converter pairs a dataset's frames and states the same way)."""
    node, driver = setup
    driver.tick(100.0)
    driver.joint_state(99.98, position=0.1)
    driver.joint_state(100.08, position=0.2)
    driver.tick(100.09)
    time.sleep(0.5)  # every state message in before the frames
    driver.frames({"head": 100.0, "left_wrist": 100.0, "right_wrist": 100.0})
    assert wait_for(lambda: len(driver.observations) == 1, 5)
    obs = driver.observations[0]
    assert to_seconds(obs.header.stamp) == pytest.approx(100.0)
    assert list(obs.joint_state.position) == [0.1]
    assert [p.pose.position.x for p in obs.eef_poses] == [0.1, 0.1]
    assert [p.header.frame_id for p in obs.eef_poses] == ["left_base_link", "right_base_link"]
    # A set sooner than the rate allows (20 Hz: 0.045 s) waits; the next one is published.
    driver.frames({"head": 100.03, "left_wrist": 100.03, "right_wrist": 100.03})
    time.sleep(0.3)
    assert len(driver.observations) == 1 and sum(node.sync.drops.values()) == 0
    driver.frames({"head": 100.06, "left_wrist": 100.06, "right_wrist": 100.06})
    assert wait_for(lambda: len(driver.observations) == 2, 5)
    assert list(driver.observations[1].joint_state.position) == [0.2]


def test_skewed_and_stale_sets_are_dropped_counted_and_reported(setup):
    node, driver = setup
    driver.tick(200.0)
    driver.joint_state(200.0)
    driver.frames({"head": 200.00, "left_wrist": 200.05, "right_wrist": 200.10})  # 100 ms skew
    assert wait_for(lambda: received(node, 1), 5)
    advance(driver, 200.10, 200.15)
    assert wait_for(lambda: node.sync.drops["skew"] == 1, 5)

    # Frames that arrive late: the clock is already 0.5 s past their capture (max_age 0.2).
    driver.tick(201.0)
    time.sleep(0.1)
    driver.joint_state(200.95)
    driver.frames({"head": 200.50, "left_wrist": 200.50, "right_wrist": 200.50})
    assert wait_for(lambda: received(node, 2), 5)
    advance(driver, 201.01, 201.05)
    assert wait_for(lambda: node.sync.drops["stale"] == 1, 5)
    assert driver.observations == []

    advance(driver, 201.06, 202.2, step=0.05)  # a diagnostics period on the sim clock

    def reported():
        for status in driver.diagnostics:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("dropped/skew") == "1" and values.get("dropped/stale") == "1":
                return values
        return None

    assert wait_for(lambda: reported() is not None, 5)
    assert float(reported()["head/age_s"]) > 0


def test_malformed_images_are_dropped_before_synchronisation(setup):
    node, driver = setup
    bad = Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(20))
    bad.header.stamp = to_time(300.0)
    driver.images["head"].publish(bad)
    assert wait_for(lambda: node.malformed["head"] == 1, 5)
    assert node.sync.stats["head"].received == 0


@pytest.mark.parametrize(
    "name, value",
    [("step_period", 0.0), ("image_size", 0), ("max_age", -0.1), ("slop", -1.0), ("max_instruction_chars", 0)],
)
def test_a_parameter_outside_its_range_stops_the_node_naming_it(name, value, rclpy_context):
    """The parameter table's ranges (issue 32 item 4): a step period of 0 divided by zero in the
    constructor, a negative age or slop dropped every set; now the node does not start, and
    says which parameter and why. A value inside the range is accepted, and a later set
    outside it is refused by rclpy (the descriptor's range)."""
    with pytest.raises(ValueError, match=f"parameter {name}:"):
        CameraIngestionNode(parameter_overrides=[Parameter(name, value=value)])
    node = CameraIngestionNode(parameter_overrides=[Parameter("max_age", value=0.2)])
    try:
        (result,) = node.set_parameters([Parameter("max_age", value=-1.0)])
        assert not result.successful and node.get_parameter("max_age").value == 0.2
        assert node.describe_parameter("step_period").floating_point_range[0].from_value == pytest.approx(1e-3)
    finally:
        node.destroy_node()
