"""rotvla_ros.model (imports no rclpy)."""
