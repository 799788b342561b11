"""Offline inputs and outputs of the core: video files, the prompts file, checkpoint download, runs over a clip.

ROS-free and torch-free; the CLI and the tests use it, the ROS node does not.
"""
