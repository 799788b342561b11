"""sam2_ros: real-time SAM 2 tracking for ROS 2. Runtime in ``sam2_ros``; export toolchain in ``export/``."""

from setuptools import find_packages, setup

setup(
    name="sam2_ros",
    version="0.1.0",
    description="Real-time SAM 2 video segmentation and tracking for robots (ROS 2)",
    python_requires=">=3.10",
    packages=find_packages(include=["sam2_ros", "sam2_ros.*"]) + ["sam2_ros_export"],
    package_dir={"sam2_ros_export": "export"},
    install_requires=["numpy<2.3", "opencv-python-headless<5", "pillow", "pyyaml", "tqdm"],
    extras_require={
        "onnxruntime": ["onnxruntime"],
        "export": ["torch", "onnx", "hydra-core", "iopath"],
    },
    entry_points={"console_scripts": ["sam2-ros = sam2_ros.cli:main", "sam2_tracker = sam2_ros.node:main"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/sam2_ros"]),
        ("share/sam2_ros", ["package.xml"]),
        ("share/sam2_ros/config", ["config/sam2_tracker.yaml", "config/fastdds_large_images.xml"]),
        ("share/sam2_ros/launch", ["launch/sam2_tracker.launch.py"]),
    ],
)
