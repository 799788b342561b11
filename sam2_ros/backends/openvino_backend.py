"""OpenVINO backend: the exported ONNX graphs on an x86 CPU, in fp32 or bf16.

For robots without an NVIDIA GPU (x86 NUCs, industrial PCs). OpenVINO compiles each ONNX graph
for the CPU it runs on: in fp32 the results equal ONNX Runtime's (and the official predictor's);
in bf16 the matrix products run on the CPU's bf16 units (AMX, AVX-512 BF16), several times faster
and not exact (measured against the official fp32 predictor in ``benchmarks/`` and the tests).
OpenVINO's CPU plugin would pick bf16 on such CPUs by itself: the precision is always stated.
"""

from __future__ import annotations

import logging

import numpy as np

from sam2_ros.backends.base import OnnxGraphCalls
from sam2_ros.errors import EngineError
from sam2_ros.graph_io import EXPORTED_GRAPHS, MEMORY_ATTENTION_DENSE
from sam2_ros.manifest import Manifest
from sam2_ros.storage import HOST

log = logging.getLogger(__name__)

#: precision -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(OnnxGraphCalls):
    """Runs the exported ONNX graphs with OpenVINO on the CPU.

    Args:
        manifest: the export's manifest.
        precision: ``fp32`` (default, exact) or ``bf16`` (needs a CPU with bf16 support; refused
            otherwise).
        threads: inference threads of each graph (0: OpenVINO's default, one per core).
    """

    name = "openvino"
    storage = HOST

    def __init__(self, manifest: Manifest, precision: str = "fp32", threads: int = 0):
        import openvino as ov

        if precision not in PRECISIONS:
            raise EngineError(f"openvino backend: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise EngineError("openvino backend: this CPU has no bf16 support (AMX or AVX-512 BF16); use fp32")
        self.manifest = manifest
        self.limits = self.export_limits(manifest)
        self.precision = precision
        # No thread pinning: pinned OpenVINO threads starve everything else in the process (the
        # ROS executor, PyTorch: it made the official predictor 9x slower in one benchmark run).
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._requests = {}
        for g, path in self.graph_files(manifest):
            try:
                compiled = core.compile_model(str(path), "CPU", config)
            except RuntimeError as e:  # OpenVINO raises RuntimeError for unreadable / unsupported models
                raise EngineError(f"OpenVINO cannot compile {path}: {e}") from e
            # a port may carry several tensor names (an output whose producer OpenVINO merged away
            # keeps the producer's name too): each port must carry one name of the contract
            io = EXPORTED_GRAPHS[g]
            wanted = set(io.inputs) | set(io.outputs)
            ports = [set(p.get_names()) for p in (*compiled.inputs, *compiled.outputs)]
            names = {next(iter(sorted(n & wanted)), None) or min(n) for n in ports}
            if names != wanted or len(ports) != len(wanted):
                raise EngineError(f"{path.name} inputs/outputs {sorted(names)} do not match {g} (re-export)")
            self._requests[g] = compiled.create_infer_request()
        self.has_dense_attention = MEMORY_ATTENTION_DENSE.name in self._requests

    def _run(self, graph: str, feeds: dict, keep_on_device: tuple[str, ...] = ()) -> list[np.ndarray]:
        request = self._requests[graph]
        # copies the outputs out of the request (the next call reuses its buffers)
        result = request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return [result[o] for o in EXPORTED_GRAPHS[graph].outputs]

    def close(self) -> None:
        """Release the compiled graphs. Safe to call twice."""
        self._requests = {}
