"""dp_ros: Diffusion Policy as a real-time ROS 2 controller for a UR5 arm."""

__version__ = "0.1.0"
