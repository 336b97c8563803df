"""ROS-free runtime core: transforms, action space, observation buffer, scheduler, interpolator,
safety envelope. Never imports rclpy; unit-tested directly (test/test_core_*.py)."""
