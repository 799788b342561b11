"""The ROS 2 adapter: the lifecycle node ``sam2_tracker`` over the core tracker.

The only layer that imports rclpy and the ROS messages (``node``, ``camera`` for one camera's
topics and services, ``convert``, ``vision`` for vision_msgs / visualization_msgs); ``worker``
(the node's tracking thread, one for every camera) and ``params`` (its parameter table) are
ROS-free so they can be tested and used without a ROS graph.
"""
