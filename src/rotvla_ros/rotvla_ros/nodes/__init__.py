"""Thin rclpy adapters over the ROS-free libraries; the only place that imports rclpy."""
