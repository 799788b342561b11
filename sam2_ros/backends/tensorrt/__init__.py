"""TensorRT: the backend that runs built engines (:mod:`.backend`) and the builder that makes them (:mod:`.build`).

Both are torch-free and run on the robot. Importing this package needs neither TensorRT nor
CUDA; constructing :class:`TensorRTBackend` or building engines imports them and raises
:class:`~sam2_ros.errors.EngineError` with the reason when they are missing.
"""

from sam2_ros.backends.tensorrt.backend import TensorRTBackend

__all__ = ["TensorRTBackend"]
