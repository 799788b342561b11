"""sam2_ros export toolchain: official SAM 2 / 2.1 checkpoints -> ONNX graphs -> TensorRT engines.

Needs PyTorch and the official ``sam2`` package; the runtime in ``sam2_ros`` does not.
Installed as the ``sam2_ros_export`` package.
"""
