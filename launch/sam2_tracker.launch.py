"""Start the sam2_tracker node with config/sam2_tracker.yaml.

    ros2 launch sam2_ros sam2_tracker.launch.py engine_dir:=/path/to/export image:=/camera/image_raw

Several cameras, one node (one set of engines; docs/ROS.md, "Several cameras, one node"):

    ros2 launch sam2_ros sam2_tracker.launch.py engine_dir:=/path/to/export cameras:='[front, wrist]' \
        image:=image_raw

With cameras, `image` is each camera's image topic relative to the camera: image:=image_raw reads
/front/image_raw and /wrist/image_raw (the compressed and click topics follow). Camera names may
carry a robot's namespace: cameras:='[robot1/front, robot2/front]'.

The node configures and activates itself (parameter autostart); to drive it from a
lifecycle manager instead, pass autostart:=false.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue


def _node(context):
    import yaml

    cameras = yaml.safe_load(LaunchConfiguration("cameras").perform(context)) or []
    if not isinstance(cameras, list):
        raise ValueError(f"cameras must be a list like '[front, wrist]', got {cameras!r}")
    image = LaunchConfiguration("image").perform(context)
    if cameras:  # <camera>/image -> <camera>/<image>
        remappings = [(f"{c}/image", f"{c}/{image}") for c in cameras if image != "image"]
    else:
        remappings = [("image", image)]
    params = os.path.join(get_package_share_directory("sam2_ros"), "config", "sam2_tracker.yaml")
    overrides = {
        "engine_dir": ParameterValue(LaunchConfiguration("engine_dir"), value_type=str),
        "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
        "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
    }
    if cameras:
        overrides["cameras"] = [str(c) for c in cameras]
    return [LifecycleNode(
        package="sam2_ros",
        executable="sam2_tracker",
        name="sam2_tracker",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[params, overrides],
        remappings=remappings,
    )]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("engine_dir", description="export directory (sam2-ros export)"),
        DeclareLaunchArgument("backend", default_value="onnxruntime"),
        DeclareLaunchArgument("image", default_value="image",
                              description="camera image topic (with cameras: relative to each camera)"),
        DeclareLaunchArgument("cameras", default_value="[]",
                              description="camera names, a YAML list: '[front, wrist]'; [] = one camera"),
        DeclareLaunchArgument("autostart", default_value="true"),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_node),
    ])
