"""Shared by rotvla_ros and arx_r5_driver. ``action_space`` imports nothing of ROS (training
code uses it); ``ros`` is for nodes."""
