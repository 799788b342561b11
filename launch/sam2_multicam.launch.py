"""Start one sam2_tracker node for several cameras (one set of engines, one tracking thread).

    ros2 launch sam2_ros sam2_multicam.launch.py engine_dir:=/path/to/export \
        cameras:='[front, wrist]' image:=image_raw

Each camera's image is read from `/<namespace>/<camera>/<image>` (image:=image_raw reads
/front/image_raw and /wrist/image_raw), its results go to `<camera>/objects`, `<camera>/label_image`,
... and its services are `/sam2_tracker/<camera>/add_prompt`, ... Camera names may carry a robot
namespace: cameras:='[robot1/front, robot2/front]' serves two robots from one GPU computer
(docs/ROS.md, "Several cameras" and "A fleet on one GPU computer"). Set the parameters of
config/sam2_tracker.yaml; image_transport:=compressed reads `<camera>/<image>/compressed`.
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
    if not isinstance(cameras, list) or not cameras:
        raise ValueError(f"cameras must be a non-empty list like '[front, wrist]', got {cameras!r}")
    image = LaunchConfiguration("image").perform(context)
    params = os.path.join(get_package_share_directory("sam2_ros"), "config", "sam2_tracker.yaml")
    return [LifecycleNode(
        package="sam2_ros",
        executable="sam2_tracker",
        name="sam2_tracker",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            params,
            {
                "cameras": [str(c) for c in cameras],
                "engine_dir": ParameterValue(LaunchConfiguration("engine_dir"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "image_transport": ParameterValue(LaunchConfiguration("image_transport"), value_type=str),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        # <camera>/image -> <camera>/<image> (the compressed and click topics follow, as for one camera)
        remappings=[(f"{c}/image", f"{c}/{image}") for c in cameras if image != "image"],
    )]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("engine_dir", description="export directory (sam2-ros export)"),
        DeclareLaunchArgument("cameras", description="camera names, a YAML list: '[front, wrist]'"),
        DeclareLaunchArgument("image", default_value="image",
                              description="each camera's image topic, relative to the camera: image_raw, ..."),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw | compressed"),
        DeclareLaunchArgument("backend", default_value="onnxruntime"),
        DeclareLaunchArgument("autostart", default_value="true"),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_node),
    ])
