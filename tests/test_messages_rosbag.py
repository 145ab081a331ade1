"""Every rotvla_msgs message type goes into a rosbag2 MCAP file and comes back equal,
with the rosbags library reading the project's own .msg text (no ROS needed to read bags)."""

import numpy as np
import pytest
from ros_samples import fill, rotvla_message_types

from rotvla_ros.data.rosbag_types import make_typestore

rclpy_serialization = pytest.importorskip("rclpy.serialization")


def assert_same(ros_msg, bag_msg, path="msg"):
    """Field-for-field equality of an rclpy message and a rosbags dataclass."""
    for name in ros_msg.get_fields_and_field_types():
        ros_value, bag_value = getattr(ros_msg, name), getattr(bag_msg, name)
        here = f"{path}.{name}"
        if hasattr(ros_value, "get_fields_and_field_types"):
            assert_same(ros_value, bag_value, here)
        elif isinstance(bag_value, np.ndarray):
            np.testing.assert_array_equal(np.asarray(ros_value, dtype=bag_value.dtype), bag_value, err_msg=here)
        elif isinstance(ros_value, (list, tuple)) and ros_value and hasattr(ros_value[0], "get_fields_and_field_types"):
            assert len(ros_value) == len(bag_value), here
            for i, (a, b) in enumerate(zip(ros_value, bag_value)):
                assert_same(a, b, f"{here}[{i}]")
        elif isinstance(ros_value, list):
            assert list(ros_value) == list(bag_value), here
        else:
            assert ros_value == bag_value, here


def test_every_message_type_round_trips_through_an_mcap_bag(tmp_path):
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    typestore = make_typestore()
    types = rotvla_message_types()
    written = {}
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for i, (name, cls) in enumerate(types.items()):
            msgtype = f"rotvla_msgs/msg/{name}"
            connection = writer.add_connection(f"/rotvla_test/{name}", msgtype, typestore=typestore)
            written[name] = fill(cls, seed=i)
            writer.write(connection, 1_000_000_000 + i, rclpy_serialization.serialize_message(written[name]))

    assert list(bag.glob("*.mcap")), "no MCAP file written"
    read = {}
    with Reader(bag) as reader:
        assert reader.message_count == len(types)
        for connection, _timestamp, raw in reader.messages():
            name = connection.msgtype.rsplit("/", 1)[-1]
            read[name] = (typestore.deserialize_cdr(raw, connection.msgtype), raw)

    assert set(read) == set(types)
    for name, cls in types.items():
        bag_msg, raw = read[name]
        assert_same(written[name], bag_msg, name)
        # And back: rosbags' own serialisation is what rclpy reads.
        reserialised = bytes(typestore.serialize_cdr(bag_msg, f"rotvla_msgs/msg/{name}"))
        assert rclpy_serialization.deserialize_message(reserialised, cls) == written[name], name
