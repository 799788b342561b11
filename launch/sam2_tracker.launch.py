"""Start the sam2_tracker node with config/sam2_tracker.yaml.

    ros2 launch sam2_ros sam2_tracker.launch.py engine_dir:=/path/to/export image:=/camera/image_raw

The node configures and activates itself (parameter autostart); to drive it from a
lifecycle manager instead, pass autostart:=false.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    params = os.path.join(get_package_share_directory("sam2_ros"), "config", "sam2_tracker.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("engine_dir", description="export directory (sam2-ros export)"),
        DeclareLaunchArgument("backend", default_value="onnxruntime"),
        DeclareLaunchArgument("image", default_value="image", description="camera image topic"),
        DeclareLaunchArgument("autostart", default_value="true"),
        DeclareLaunchArgument("namespace", default_value=""),
        LifecycleNode(
            package="sam2_ros",
            executable="sam2_tracker",
            name="sam2_tracker",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[
                params,
                {
                    "engine_dir": ParameterValue(LaunchConfiguration("engine_dir"), value_type=str),
                    "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                    "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                },
            ],
            remappings=[("image", LaunchConfiguration("image"))],
        ),
    ])
