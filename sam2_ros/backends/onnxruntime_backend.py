"""ONNX Runtime backend: CPU provider, or CUDA / TensorRT providers with IO binding on GPU."""

from __future__ import annotations

import logging

import numpy as np

from sam2_ros.backends.base import OnnxGraphCalls
from sam2_ros.errors import EngineError
from sam2_ros.graph_io import EXPORTED_GRAPHS, MEMORY_ATTENTION_DENSE
from sam2_ros.manifest import Manifest, check_graph_inputs
from sam2_ros.storage import HOST

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeBackend(OnnxGraphCalls):
    """Runs the exported ONNX graphs with ONNX Runtime.

    Args:
        manifest: the export's manifest.
        providers: names or aliases (``cpu``, ``cuda``, ``tensorrt``) in order of preference.
        intra_op_threads: threads of each session's pool (0: ONNX Runtime's default, one per core).
        allow_spinning: let idle pool threads spin-wait for work (ONNX Runtime's default, kept
            here). Without it each of the graphs' many small operators waits for its threads to
            wake: with it off, the node test at 256 px processed 5 frames of a 3-second burst (and
            took in only 71 of its 300 images). Turn it off when
            another runtime shares the cores in the same process (PyTorch), whose threads the
            spinning pool would starve.

    On a GPU provider the image features stay on the device between graphs (IO binding); the
    memory bank is host memory (``HOST`` storage) and is copied to the device per call. Memory
    attention runs unmasked on each object's packed valid slots when the export has the dense
    graph (:class:`~sam2_ros.backends.base.PackedAttention`).
    """

    name = "onnxruntime"
    storage = HOST

    def __init__(self, manifest: Manifest, providers: list[str] | None = None, intra_op_threads: int = 0,
                 allow_spinning: bool = True):
        import onnxruntime as ort

        self.manifest = manifest
        self.limits = self.export_limits(manifest)
        wanted = [PROVIDER_ALIASES.get(p, p) for p in (providers or ["cpu"])]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise EngineError(
                f"ONNX Runtime providers {missing} are not available (installed: {available}); "
                "install onnxruntime-gpu for CUDA/TensorRT or choose providers=['cpu']"
            )
        self.providers = wanted
        self.on_gpu = wanted[0] != "CPUExecutionProvider"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1  # the graphs run one after the other
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.sessions = {}
        for g, path in self.graph_files(manifest):
            try:
                self.sessions[g] = ort.InferenceSession(str(path), opts, providers=wanted)
            except Exception as e:  # ORT raises its own exception types
                raise EngineError(f"ONNX Runtime cannot load {path}: {e}") from e
        self._check_io()
        self.has_dense_attention = MEMORY_ATTENTION_DENSE.name in self.sessions
        if not self.has_dense_attention:
            log.info("%s has no %s graph (older export): memory attention runs masked; re-export to speed it up",
                     manifest.path.parent, MEMORY_ATTENTION_DENSE.name)

    def _check_io(self) -> None:
        for g, sess in self.sessions.items():
            for kind, got in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
                expected = set(getattr(EXPORTED_GRAPHS[g], kind)) | set(self.manifest.data["graphs"][g].get(kind, {}))
                names = {i.name for i in got}
                if expected != names:
                    raise EngineError(f"{g}.onnx {kind} {sorted(names)} do not match {sorted(expected)} (re-export)")
            check_graph_inputs(self.manifest, g, {i.name: i.shape for i in sess.get_inputs()})

    # -------------------------------------------------------------- running
    def _run(self, graph: str, feeds: dict, keep_on_device: tuple[str, ...] = ()) -> list:
        sess = self.sessions[graph]
        outputs = EXPORTED_GRAPHS[graph].outputs
        if not self.on_gpu:
            return sess.run(outputs, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        import onnxruntime as ort

        binding = sess.io_binding()
        for k, v in feeds.items():
            if isinstance(v, ort.OrtValue):
                binding.bind_ortvalue_input(k, v)
            else:
                binding.bind_cpu_input(k, np.ascontiguousarray(v))
        for o in outputs:
            if o in keep_on_device:
                binding.bind_output(o, "cuda")
            else:
                binding.bind_output(o, "cpu")
        sess.run_with_iobinding(binding)
        vals = binding.get_outputs()
        return [v if o in keep_on_device else v.numpy() for o, v in zip(outputs, vals)]

    def close(self) -> None:
        """Release the ONNX Runtime sessions (and their memory). Safe to call twice."""
        self.sessions = {}
