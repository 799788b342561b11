"""FLOP counting of the export wrappers and FPS projection (CPU; needs torch and the official sam2)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from sam2_ros_export.flops import (  # noqa: E402
    DEVICE_TFLOPS_FP16,
    FlopModel,
    analytic_floor_ms,
    count_flops,
    project_fps,
    projection_table,
)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 32)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x, img, q, k, v, mask):
        self.lin(x)
        self.conv(img)
        F.scaled_dot_product_attention(q, k, v)
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x @ x.T


def test_counter_matches_a_hand_count_on_a_small_module():
    x = torch.randn(4, 16)
    img = torch.randn(1, 3, 10, 10)
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 6)
    mask = torch.ones(1, 1, 1, 7, dtype=torch.bool)
    total, by_op = count_flops(Small(), x, img, q, k, v, mask)
    linear = 2 * 4 * 16 * 32
    conv = 2 * (8 * 10 * 10) * (3 * 3 * 3)
    attention = 2 * 1 * 2 * 5 * 7 * 4 + 2 * 1 * 2 * 5 * 7 * 6  # Q K^T + P V
    gram = 2 * 4 * 16 * 4
    assert total == linear + conv + 2 * attention + gram, by_op


@pytest.fixture(scope="module")
def tiny256():
    return FlopModel("sam2.1_hiera_tiny", 256)


def test_memory_attention_matches_a_hand_count(tiny256):
    """SAM 2.1 memory attention: 4 layers of RoPE self-attention (256-d), cross-attention
    (256-d queries, 64-d memory keys/values), MLP 256-2048-256, plus the pointer tpos projection."""
    f = tiny256.frame(objects=1, cond_slots=1)
    hw, d, m, p = 16 * 16, 256, f.mem_slots, f.ptr_slots
    keys = m * hw + 4 * p  # each 256-d pointer is 4 tokens of 64
    self_attn = 4 * 2 * hw * d * d + 2 * 2 * hw * hw * d
    cross = 2 * 2 * hw * d * d + 2 * 2 * keys * 64 * d + 2 * 2 * hw * keys * d
    mlp = 2 * 2 * hw * d * 2048
    expected = 4 * (self_attn + cross + mlp) + 2 * p * 256 * 64
    assert (m, p) == (7, 16)
    assert f.per_graph["memory_attention"] == expected


def test_frame_flops_are_positive_and_scale_with_objects(tiny256):
    f1, f2, f4 = (tiny256.frame(objects=n) for n in (1, 2, 4))
    for f in (f1, f2, f4):
        assert all(v > 0 for v in f.per_graph.values()), f.per_graph
        assert f.total == sum(f.per_graph.values()) > 0
    assert f1.per_graph["image_encoder"] == f4.per_graph["image_encoder"]  # once per frame
    for g in ("mask_decoder", "memory_encoder"):  # batched over objects
        assert f2.per_graph[g] == 2 * f1.per_graph[g]
        assert f4.per_graph[g] == 4 * f1.per_graph[g]
    # memory attention: the same cost per object, plus the first layer's self-attention once
    ma = {n: f.per_graph["memory_attention"] for n, f in ((1, f1), (2, f2), (4, f4))}
    per_object = ma[2] - ma[1]
    assert ma[4] - ma[2] == 2 * per_object and 0 < ma[1] - per_object < 0.1 * ma[1]
    assert f1.total < f2.total < f4.total
    more_memory = tiny256.frame(objects=1, cond_slots=2)
    assert more_memory.per_graph["memory_attention"] > f1.per_graph["memory_attention"]
    assert f1.as_dict()["total_gflop"] == pytest.approx(f1.total / 1e9, abs=1e-3)


def test_flops_grow_with_image_size(tiny256):
    big = FlopModel("sam2.1_hiera_tiny", 512).frame(1)
    small = tiny256.frame(1)
    # 4x the pixels; windowed attention is local, so the encoder grows a little less than 4x
    assert 3 * small.per_graph["image_encoder"] < big.per_graph["image_encoder"] < 5 * small.per_graph["image_encoder"]
    # 4x the tokens: projections grow 4x, attention over all memory tokens 16x
    assert 6 * small.per_graph["memory_attention"] < big.per_graph["memory_attention"] < 16 * small.per_graph["memory_attention"]


def test_project_fps_and_floor():
    assert project_fps(1e12, 100.0, 0.5) == pytest.approx(50.0)
    assert project_fps(2e12, 100.0, 0.5) == pytest.approx(25.0)
    assert analytic_floor_ms(1e12, 100.0) == pytest.approx(10.0)
    for bad in ((0, 10, 0.5), (1e9, 0, 0.5), (1e9, 10, 0.0), (1e9, 10, 1.5)):
        with pytest.raises(ValueError):
            project_fps(*bad)


def test_projection_table(tiny256):
    f = tiny256.frame(1)
    rows = projection_table([f], {"a": 10.0, "b": 20.0}, efficiencies=(0.5,))
    assert [r["device"] for r in rows] == ["a", "b"]
    assert rows[1]["fps@0.5"] == pytest.approx(2 * rows[0]["fps@0.5"], rel=1e-2)
    assert all(math.isfinite(v) and v > 0 for v in DEVICE_TFLOPS_FP16.values())
