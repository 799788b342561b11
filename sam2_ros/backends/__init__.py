"""Backends behind one protocol (:class:`~sam2_ros.backends.base.Backend`), chosen by name.

The table :data:`BACKEND_INFO` is the one list of backends: the CLI's choices, the node's
``backend`` parameter and :func:`load_backend` read it. :func:`backend_options` maps the
settings users give (CLI flags, node parameters) to the options of the chosen backend, so
no caller needs to know which backend takes which option.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from sam2_ros.backends.base import Backend, DecoderOutput, ImageFeatures, ShapeLimits, Tensor
from sam2_ros.errors import EngineError
from sam2_ros.manifest import load_manifest


@dataclass(frozen=True)
class BackendInfo:
    """One backend: where its class lives, the options it takes and what it needs installed."""

    name: str
    module: str
    cls: str
    options: tuple[str, ...]
    needs: str


BACKEND_INFO: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo("onnxruntime", "sam2_ros.backends.onnxruntime_backend", "OnnxRuntimeBackend",
                    ("providers", "intra_op_threads", "allow_spinning"), "onnxruntime (onnxruntime-gpu for the cuda/tensorrt providers)"),
        BackendInfo("openvino", "sam2_ros.backends.openvino_backend", "OpenVinoBackend",
                    ("precision", "threads"), "openvino (pip install openvino, or the package's openvino extra)"),
        BackendInfo("torch", "sam2_ros.backends.torch_backend", "TorchBackend",
                    ("checkpoint", "device", "precision", "imaging", "cuda_graph", "compile"),
                    "torch and the official sam2 package"),
        BackendInfo("tensorrt", "sam2_ros.backends.tensorrt", "TensorRTBackend",
                    ("device", "use_cuda_graph", "pin_host_memory", "verify_engine_hashes", "device_memory"),
                    "tensorrt and cuda-python on an NVIDIA GPU"),
    )
}
BACKENDS: tuple[str, ...] = tuple(BACKEND_INFO)
#: How users spell the torch backend's ``cuda_graph`` option (CLI ``--cuda-graph``, node parameter ``cuda_graph``).
CUDA_GRAPH_CHOICES: dict[str, str | bool] = {"auto": "auto", "on": True, "off": False}


def backend_options(backend: str, **settings) -> dict:
    """The options of ``backend`` among ``settings``; unset ones (None, empty, 0) are left out.

    ``backend_options("onnxruntime", providers=["cuda"], checkpoint=None)`` -> ``{"providers": ["cuda"]}``.
    """
    info = _info(backend)
    return {k: v for k, v in settings.items() if k in info.options and _is_set(v)}


def takes_precision(backend: str) -> bool:
    """Whether ``backend`` takes a ``precision`` option (others fix it at export / engine build)."""
    return "precision" in _info(backend).options


def _is_set(value) -> bool:
    """None, "", an empty list and the number 0 mean "the backend's default"; False is a setting."""
    if value is None or isinstance(value, bool):
        return value is not None
    if isinstance(value, (str, list, tuple)):
        return len(value) > 0
    return value != 0


def load_backend(engine_dir: str | Path, backend: str = "onnxruntime", **options) -> Backend:
    """Open the export in ``engine_dir`` with ``backend``; raises :class:`EngineError` with the reason.

    Options: onnxruntime: ``providers`` (e.g. ``["cuda", "cpu"]``), ``intra_op_threads``, ``allow_spinning``;
    openvino: ``precision``, ``threads``; torch: ``checkpoint``, ``device``, ``precision``, ``imaging``
    (``"auto"``, ``"device"``, ``"host"``: where frames are resized and masks rendered),
    ``cuda_graph`` (``"auto"``: CUDA-graph replay of the tracking step on CUDA devices; ``True``, ``False``,
    ``"emulate"``), ``compile`` (``torch.compile`` the graphs); tensorrt: ``device``, ``use_cuda_graph``, ``pin_host_memory``,
    ``verify_engine_hashes``, ``device_memory`` (``"auto"``, ``"torch"``, ``"host"``: where the memory bank lives). An option the backend does not take is an :class:`EngineError`.
    """
    info = _info(backend)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise EngineError(f"the {backend} backend takes no option {', '.join(unknown)}; it takes {', '.join(info.options)}")
    manifest = load_manifest(engine_dir)
    try:
        cls = getattr(importlib.import_module(info.module), info.cls)
    except ImportError as e:
        raise EngineError(f"the {backend} backend needs {info.needs}: {e}") from e
    return cls(manifest, **options)


def _info(backend: str) -> BackendInfo:
    try:
        return BACKEND_INFO[backend]
    except KeyError:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None


__all__ = [
    "Backend", "BackendInfo", "BACKEND_INFO", "BACKENDS", "CUDA_GRAPH_CHOICES", "DecoderOutput", "ImageFeatures", "ShapeLimits", "Tensor",
    "backend_options", "load_backend", "takes_precision",
]
