"""The executor's backends come from a registry (as ros2_control loads hardware plugins): a
package adds one with one class and one entry point, and the executor node builds it by name,
declares its parameters and drives its arms; an unknown name is refused with the names that
exist."""

import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT, spin_until, wait_for

pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from arx_r5_driver.backends import available_backends, backend_class  # noqa: E402

BACKEND_MODULE = """
import numpy as np

from arx_r5_driver.kinematics import ArmKinematics
from arx_r5_driver.configuration import HOME_JOINTS

BUILT = []


class RecordedArm:
    def __init__(self, name):
        self.name, self.joints, self.commands, self.closed = name, np.array(HOME_JOINTS, float), [], False

    def read(self):
        return self.joints.copy(), 0.04

    def command(self, joints, gripper):
        self.commands.append((np.array(joints), gripper))

    def gravity_compensation(self):
        pass

    def close(self):
        self.closed = True


class RecordingBackend:
    PARAMETERS = {"recording_label": ("none", "A setting only this backend has.")}
    ARM_PARAMETERS = {"recording_port": ("", "A per-arm setting only this backend has.")}

    def __init__(self, context):
        self.context, self.arms, self.closed = context, {}, False
        BUILT.append(self)

    def arm(self, name):
        self.arms[name] = RecordedArm(name)
        return self.arms[name]

    def teleop_source(self, arms):
        raise NotImplementedError

    def advance(self, elapsed):
        pass

    def forget(self):
        pass

    def close(self):
        self.closed = True
"""


@pytest.fixture
def recording_backend(tmp_path, monkeypatch):
    """A package outside this workspace registering the backend ``recording``."""
    (tmp_path / "recording_arms.py").write_text(BACKEND_MODULE)
    dist = tmp_path / "recording_arms-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: recording-arms\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [arx_r5_driver.backends]
            recording = recording_arms:RecordingBackend
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    sys.modules.pop("recording_arms", None)


def executor(**overrides):
    from arx_r5_driver.executor_node import ExecutorNode

    return ExecutorNode(
        cli_args=["--ros-args", "--params-file", str(REPO_ROOT / "config" / "robot.yaml")],
        parameter_overrides=[Parameter(name, value=value) for name, value in overrides.items()],
    )


def test_a_backend_registered_by_another_package_is_built_by_name_and_drives_the_arms(recording_backend, rclpy_context):
    assert {"sim", "topic", "sdk", "recording"} <= set(available_backends())
    node = executor(backend="recording", recording_label="bench-7")
    try:
        import recording_arms

        (backend,) = recording_arms.BUILT
        assert node.get_parameter("recording_label").value == "bench-7"
        assert node.has_parameter("left.recording_port") and node.has_parameter("right.recording_port")
        assert not node.has_parameter("left.can_port"), "another backend's parameters are not declared"
        assert backend.context.values["recording_label"] == "bench-7"
        assert set(backend.arms) == {"left", "right"}
        # The control loop runs on the node's clock and holds each arm where it is.
        assert wait_for(lambda: all(arm.commands for arm in backend.arms.values()), 10)
        joints, _ = backend.arms["left"].commands[-1]
        np.testing.assert_allclose(joints, backend.arms["left"].joints, atol=1e-6)
    finally:
        node.destroy_node()
    assert backend.closed and all(arm.closed for arm in backend.arms.values())


def test_an_unknown_backend_is_refused_with_the_names_that_exist(rclpy_context):
    with pytest.raises(ValueError, match="backend must be one of sdk, sim, topic, not 'canbus'"):
        backend_class("canbus")
    with pytest.raises(ValueError, match="not 'canbus'"):
        executor(backend="canbus")


def test_the_built_in_backends_are_found_without_installed_metadata():
    """Run from a source tree or a colcon build without dist-info, the built-ins still load;
    the SDK's backend class loads without ARX's SDK (it is imported when an arm is built)."""
    for name in ("sim", "topic", "sdk"):
        cls = backend_class(name)
        assert hasattr(cls, "PARAMETERS") and hasattr(cls, "ARM_PARAMETERS")


def test_arms_over_a_topic_are_published_with_the_stamp_of_their_measurement(rclpy_context):
    """The topic backend's state is as old as its message: /joint_states carries the stamp
    the arms measured it at, not the cycle that read it (consumers pair it with camera frames
    by stamp), and a measurement is published once however many cycles read it."""
    from rclpy.duration import Duration
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from arx_r5_driver.configuration import HOME_JOINTS
    from arx_r5_driver.kinematics import joint_names
    from rotvla_common import topics
    from rotvla_common.ros import SENSOR_QOS

    node = executor(backend="topic")
    arms = rclpy_context.create_node("arms_over_a_topic")
    spinner = SingleThreadedExecutor()
    spinner.add_node(node)
    spinner.add_node(arms)
    try:
        publisher = arms.create_publisher(JointState, topics.SIM_JOINT_STATES, SENSOR_QOS)
        published: list[JointState] = []
        arms.create_subscription(JointState, topics.JOINT_STATES, published.append, SENSOR_QOS)
        measured = (arms.get_clock().now() - Duration(seconds=0.3)).to_msg()  # a state 0.3 s old
        state = JointState(name=joint_names("left") + joint_names("right"), position=[*HOME_JOINTS, 0.04] * 2)
        state.header.stamp = measured

        def send_and_receive():
            publisher.publish(state)
            return bool(published)

        assert spin_until(spinner, send_and_receive, 10.0)
        spin_until(spinner, lambda: False, 0.3)  # ~60 more control cycles on the same state
        seconds = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in published]
        assert seconds == pytest.approx([measured.sec + measured.nanosec * 1e-9] * len(published), abs=1e-6)
        assert len(published) == 1, "a measurement already published is not published again"
    finally:
        spinner.shutdown()
        arms.destroy_node()
        node.destroy_node()
