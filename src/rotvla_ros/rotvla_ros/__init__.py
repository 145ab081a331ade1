"""RotVLA on ROS 2. Only ``rotvla_ros.nodes`` imports rclpy."""
