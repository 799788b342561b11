"""sam2_ros: real-time SAM 2 tracking for ROS 2.

Two Python packages: the runtime ``sam2_ros`` (torch-free core, backends, ROS adapter) and the
export toolchain ``sam2_ros_export`` (in ``export/sam2_ros_export``; needs PyTorch). The ROS
interfaces are a separate ament_cmake package in ``msg/``. See docs/ARCHITECTURE.md.
"""

from setuptools import find_packages, setup

setup(
    name="sam2_ros",
    version="0.1.0",
    description="Real-time SAM 2 video segmentation and tracking for robots (ROS 2)",
    python_requires=">=3.10",
    packages=find_packages(include=["sam2_ros", "sam2_ros.*"]) + find_packages("export"),
    package_dir={"sam2_ros_export": "export/sam2_ros_export"},
    install_requires=["numpy<2.3", "opencv-python-headless<5", "pillow", "pyyaml", "tqdm"],
    extras_require={
        "onnxruntime": ["onnxruntime"],
        "openvino": ["openvino==2026.4.1"],  # the openvino backend (x86 CPUs, bf16 on AMX / AVX-512 BF16)
        "bag": ["rosbags>=0.11.9,<0.12"],  # `sam2-ros track --bag` (rosbag2 in and out, no ROS install needed)
        "export": ["torch", "onnx", "hydra-core", "iopath"],
    },
    entry_points={"console_scripts": ["sam2-ros = sam2_ros.cli:main", "sam2_tracker = sam2_ros.ros.node:main"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/sam2_ros"]),
        ("share/sam2_ros", ["package.xml"]),
        ("share/sam2_ros/config", ["config/sam2_tracker.yaml", "config/fastdds_large_images.xml"]),
        ("share/sam2_ros/launch", ["launch/sam2_tracker.launch.py"]),
    ],
)
