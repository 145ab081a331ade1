"""rotvla_ros.policy (imports no rclpy)."""
