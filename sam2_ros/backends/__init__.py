"""Backends behind one protocol (:class:`~sam2_ros.backends.base.Backend`), chosen by name."""

from __future__ import annotations

from pathlib import Path

from sam2_ros.backends.base import Backend, DecoderOutput, ImageFeatures
from sam2_ros.errors import EngineError
from sam2_ros.manifest import load_manifest

BACKENDS = ("onnxruntime", "torch", "tensorrt")


def load_backend(engine_dir: str | Path, backend: str = "onnxruntime", **options) -> Backend:
    """Open the export in ``engine_dir`` with ``backend``; raises :class:`EngineError` with the reason.

    Options: onnxruntime: ``providers`` (e.g. ``["cuda", "cpu"]``), ``intra_op_threads``;
    torch: ``checkpoint``, ``device``; tensorrt: see :mod:`sam2_ros.backends.tensorrt_backend`.
    """
    manifest = load_manifest(engine_dir)
    if backend == "onnxruntime":
        from sam2_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(manifest, **options)
    if backend == "torch":
        from sam2_ros.backends.torch_backend import TorchBackend

        return TorchBackend(manifest, **options)
    if backend == "tensorrt":
        try:
            from sam2_ros.backends.tensorrt_backend import TensorRTBackend
        except ImportError as e:
            raise EngineError(f"the tensorrt backend is not available: {e}") from e
        return TensorRTBackend(manifest, **options)
    raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "DecoderOutput", "ImageFeatures", "load_backend", "BACKENDS"]
