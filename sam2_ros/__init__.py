"""sam2_ros: real-time SAM 2 video segmentation and tracking for robots (ROS-free core + ROS 2 node)."""

__version__ = "0.1.0"
