"""Training stages I-III (no rclpy): ``rotvla_train stage1|stage2|stage3 --config ...``."""
