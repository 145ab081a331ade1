"""rotvla_ros.train (imports no rclpy)."""
