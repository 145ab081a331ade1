"""rotvla_ros.data (imports no rclpy)."""
