"""Floating-point operations of one tracked frame, per graph, and FPS projected from them.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the export wrappers
(``sam2_ros.backends.torch_backend.graphs``), i.e. exactly the maths the engines run; a multiply-add counts
as 2 FLOPs. Only matrix products, convolutions and attention are counted (what tensor cores
execute); element-wise work, normalisation and memory traffic are not, so a projection is an
upper bound of the speed (a *floor* of the latency). The modules run on PyTorch's ``meta``
device: no weights are read and no arithmetic is done, so even ``large`` at 1024 counts in
seconds on a CPU.

One tracked frame with ``B`` objects runs the image encoder once and, batched over the
objects, memory attention over ``mem_slots`` spatial memories and ``ptr_slots`` object
pointers, the mask decoder with one (padding) point, and the memory encoder.

Needs torch and the official ``sam2`` package (the export extras).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from sam2_ros.models import DEFAULT_MODEL, MODELS

#: Published peak dense FP16 tensor-core throughput in TFLOPS (no 2:4 sparsity), used by
#: :func:`project_fps`. Sources:
#:
#: * Jetson AGX Orin 64GB: NVIDIA Jetson AGX Orin Series Technical Brief: 16 SMs / 64
#:   third-generation tensor cores at up to 1.3 GHz, 170 sparse INT8 TOPS on the GPU. Dense
#:   INT8 is half of that (85) and dense FP16 half of dense INT8 (Ampere tensor cores):
#:   64 cores x 512 FP16 FLOP/clock x 1.3 GHz = 42.6 TFLOPS.
#: * Jetson Orin NX 16GB: 8 SMs / 32 tensor cores at up to 918 MHz (60 of the module's 100
#:   sparse INT8 TOPS are the GPU's): 32 x 512 x 0.918 GHz = 15.0 TFLOPS.
#: * H100 SXM5: NVIDIA H100 datasheet / Hopper whitepaper, FP16/BF16 tensor 989.4 TFLOPS
#:   dense (1979 with sparsity); H100 PCIe 756 TFLOPS dense.
#: * H200 SXM: same GH100 compute as H100 SXM (989 TFLOPS dense FP16), more and faster HBM3e.
DEVICE_TFLOPS_FP16: dict[str, float] = {
    "jetson_agx_orin_64gb": 42.6,
    "jetson_orin_nx_16gb": 15.0,
    "h100_sxm": 989.4,
    "h100_pcie": 756.0,
    "h200_sxm": 989.4,
}
#: Fractions of peak for the projections: measured SAM-family TensorRT FP16 engines reach
#: well under half of peak (attention at small batch, non-matmul layers, launch gaps).
DEFAULT_EFFICIENCIES = (0.25, 0.4)

def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (not in torch's registry).

    Shapes [B, H, L, E] / [B, H, S, E] / [B, H, S, Ev]: Q @ K^T and P @ V, 2 FLOPs per MAC.
    """
    b, h, lq, e = query
    s, ev = key[-2], value[-1]
    return 2 * b * h * lq * s * e + 2 * b * h * lq * s * ev


def _custom_mapping() -> dict:
    import torch

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


def count_flops(fn, *args, **kwargs) -> tuple[int, dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` under ``FlopCounterMode``; return total FLOPs and FLOPs by aten op."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with counter, torch.inference_mode():
        fn(*args, **kwargs)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


@dataclass
class FrameFlops:
    """FLOPs of one tracked frame."""

    model: str
    image_size: int
    objects: int
    mem_slots: int
    ptr_slots: int
    per_graph: dict[str, int]
    by_op: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def total(self) -> int:
        return sum(self.per_graph.values())

    @classmethod
    def from_dict(cls, d: dict) -> "FrameFlops":
        """The inverse of :meth:`as_dict` (to the MFLOP: as_dict rounds), without the per-op counts."""
        return cls(d["model"], d["image_size"], d["objects"], d["mem_slots"], d["ptr_slots"],
                   {k: round(v * 1e9) for k, v in d["per_graph_gflop"].items()})

    def as_dict(self) -> dict:
        return {
            "model": self.model, "image_size": self.image_size, "objects": self.objects,
            "mem_slots": self.mem_slots, "ptr_slots": self.ptr_slots,
            "per_graph_gflop": {k: round(v / 1e9, 3) for k, v in self.per_graph.items()},
            "total_gflop": round(self.total / 1e9, 3),
        }


class FlopModel:
    """The four export wrappers of one model and size on the ``meta`` device, ready to count."""

    def __init__(self, model: str, image_size: int = 1024):
        import torch

        from sam2_ros.backends.torch_backend.graphs import graph_modules, memory_layout
        from sam2_ros.backends.torch_backend.official import build_video_predictor

        self.model, self.image_size = model, image_size
        sam = build_video_predictor(model, None, image_size=image_size, device="cpu")
        self.recent = sam.num_maskmem - 1
        self.ptr_recent = sam.max_obj_ptrs_in_encoder - 1
        self.feat = image_size // sam.backbone_stride
        self.hidden, self.mem_dim = sam.hidden_dim, sam.mem_dim
        self.mem_tokens = memory_layout(sam, image_size)[0].shape[0]  # tokens per memory frame (EdgeTAM: 512)
        # wrappers compute their constant buffers (RoPE, position encodings) on CPU, then go to meta;
        # no parameter requires grad: FlopCounterMode's module tracker hooks the autograd graph of any
        # input that does, and EdgeTAM's Perceiver feeds its latents (parameters) to its layers, which
        # fails in inference mode (no grad_fn) from torch 2.14 on
        self.graphs = {name: m.to("meta").requires_grad_(False) for name, m in graph_modules(sam, image_size).items()}
        self._torch = torch

    def frame(self, objects: int = 1, cond_slots: int = 1, points: int = 1) -> FrameFlops:
        """FLOPs of one tracking frame of ``objects`` objects with ``cond_slots`` conditioning frames each."""
        if objects < 1 or cond_slots < 1 or points < 1:
            raise ValueError("objects, cond_slots and points must be >= 1")
        torch = self._torch
        b, h, s = objects, self.feat, self.image_size
        m, p = self.recent + cond_slots, self.ptr_recent + cond_slots
        per, by_op = {}, {}
        with torch.device("meta"):
            image = torch.zeros(1, 3, s, s)
            per["image_encoder"], by_op["image_encoder"] = count_flops(self.graphs["image_encoder"], image)
            s0, s1, emb = torch.zeros(1, self.hidden // 8, 4 * h, 4 * h), torch.zeros(1, self.hidden // 4, 2 * h, 2 * h), torch.zeros(1, self.hidden, h, h)
            per["memory_attention"], by_op["memory_attention"] = count_flops(
                self.graphs["memory_attention"], emb, torch.zeros(b, m, self.mem_tokens, self.mem_dim),
                torch.zeros(b, m, dtype=torch.int64), torch.ones(b, m, dtype=torch.bool),
                torch.zeros(b, p, self.hidden), torch.zeros(b, p), torch.ones(b, p, dtype=torch.bool),
            )
            fb = torch.zeros(b)
            per["mask_decoder"], by_op["mask_decoder"] = count_flops(
                self.graphs["mask_decoder"], torch.zeros(b, self.hidden, h, h), s0, s1, fb,
                torch.zeros(b, points, 2), torch.zeros(b, points, dtype=torch.int32),
                torch.zeros(b, 1, 4 * h, 4 * h), fb, fb,
            )
            per["memory_encoder"], by_op["memory_encoder"] = count_flops(
                self.graphs["memory_encoder"], emb, torch.zeros(b, 1, 4 * h, 4 * h), fb, torch.zeros(b, 1),
            )
        return FrameFlops(self.model, self.image_size, objects, m, p, per, by_op)


def frame_flops(model: str, image_size: int = 1024, objects: int = 1, cond_slots: int = 1) -> FrameFlops:
    """FLOPs of one tracked frame (builds the model; use :class:`FlopModel` for several counts)."""
    return FlopModel(model, image_size).frame(objects, cond_slots)


def project_fps(flops_per_frame: float, tflops: float, efficiency: float = 0.4) -> float:
    """Frames per second if ``flops_per_frame`` run at ``efficiency`` x ``tflops`` peak."""
    if flops_per_frame <= 0:
        raise ValueError(f"flops_per_frame must be > 0, got {flops_per_frame}")
    if tflops <= 0 or not 0 < efficiency <= 1:
        raise ValueError(f"need tflops > 0 and 0 < efficiency <= 1, got {tflops}, {efficiency}")
    return tflops * 1e12 * efficiency / flops_per_frame


def analytic_floor_ms(flops_per_frame: float, measured_tflops: float) -> float:
    """Latency of a frame at a measured matmul throughput: the floor a real run is compared to."""
    return 1e3 * flops_per_frame / (measured_tflops * 1e12)


def projection_table(frames: list[FrameFlops], devices: dict[str, float] | None = None, efficiencies=DEFAULT_EFFICIENCIES) -> list[dict]:
    """One row per frame count and device: projected FPS at each efficiency."""
    devices = devices or DEVICE_TFLOPS_FP16
    rows = []
    for f in frames:
        for dev, tf in devices.items():
            rows.append({
                "model": f.model, "image_size": f.image_size, "objects": f.objects, "gflop": round(f.total / 1e9, 1),
                "device": dev, "tflops_fp16": tf,
                **{f"fps@{e:g}": round(project_fps(f.total, tf, e), 1) for e in efficiencies},
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="FLOPs per tracked frame and projected FPS")
    ap.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS))
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--cond-slots", type=int, default=1)
    ap.add_argument("--no-projection", action="store_true", help="print only the FLOPs of each frame")
    a = ap.parse_args(argv)
    fm = FlopModel(a.model, a.image_size)
    frames = [fm.frame(n, a.cond_slots) for n in a.objects]
    for f in frames:
        print(json.dumps(f.as_dict()))
    for row in [] if a.no_projection else projection_table(frames):
        print(json.dumps(row))
    return 0


def frame_flops_in_model_env(model: str, image_size: int, objects: list[int]) -> list[FrameFlops]:
    """One frame's FLOPs per object count, counted under the Python whose ``sam2`` package builds
    ``model`` (EdgeTAM's environment for EdgeTAM; this one for SAM 2)."""
    from sam2_ros_export.model_env import model_python, run_python

    python = model_python(model)
    if python is None:
        fm = FlopModel(model, image_size)
        return [fm.frame(n) for n in objects]
    proc = run_python(python, ["-m", "sam2_ros_export.flops", "--model", model, "--image-size", str(image_size),
                               "--objects", *map(str, objects), "--no-projection"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"counting {model}'s FLOPs under {python} failed:\n{proc.stderr[-3000:]}")
    return [FrameFlops.from_dict(json.loads(line)) for line in proc.stdout.splitlines() if line.startswith("{")]


if __name__ == "__main__":
    raise SystemExit(main())
