"""The engine directory's ``manifest.json``: what was exported, how, and checks on load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2_ros.errors import EngineError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
GRAPH_NAMES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (checkpoints, graphs and engines are recorded by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """The model settings the tracker needs, read from the manifest's ``flags``.

    The export reads them from the built model, so every model-specific fact the runtime uses is
    here, never keyed on the model's name. The memory layout: a memory frame is ``mem_tokens``
    tokens of ``mem_dim`` (SAM 2: the ``feat_size**2`` feature map; EdgeTAM: 256 global + 256 2-D
    Perceiver latents = 512). Memory attention (``memory_attention_layers`` layers) rotates the last
    ``mem_rope_grid[0] * mem_rope_grid[1]`` tokens of each memory frame by RoPE on that integer grid
    (SAM 2: every token, on the query grid; EdgeTAM: the 2-D latents on 16x16), the others and the
    object-pointer tokens not at all. ``add_tpos_enc_to_obj_ptrs`` / ``no_obj_embed_spatial``: the
    pointers' temporal encoding and the "absent" memory embedding (None: an export that predates them).
    """

    model: str
    image_size: int
    feat_size: int
    hidden_dim: int
    mem_dim: int
    num_maskmem: int
    max_obj_ptrs_in_encoder: int
    use_signed_tpos_enc_to_obj_ptrs: bool
    only_obj_ptrs_in_the_past_for_eval: bool
    multimask_output_in_sam: bool
    multimask_output_for_tracking: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    binarize_mask_from_pts_for_mem_enc: bool
    use_mask_input_as_output_without_sam: bool
    fixed_no_obj_ptr: bool
    pred_obj_scores: bool
    directly_add_no_mem_embed: bool
    mem_tokens: int = 0
    mem_rope_grid: tuple[int, int] = (0, 0)
    memory_attention_layers: int = 4
    add_tpos_enc_to_obj_ptrs: bool | None = None
    no_obj_embed_spatial: bool | None = None

    def __post_init__(self):
        # exports from before these fields: SAM 2, every memory token a feature-map cell on the query grid
        if not self.mem_tokens:
            object.__setattr__(self, "mem_tokens", self.feat_size**2)
        if not any(self.mem_rope_grid):
            object.__setattr__(self, "mem_rope_grid", (self.feat_size, self.feat_size))
        object.__setattr__(self, "mem_rope_grid", tuple(int(x) for x in self.mem_rope_grid))

    @property
    def low_res_size(self) -> int:
        return self.feat_size * 4

    def use_multimask(self, is_init: bool, num_points: int) -> bool:
        """Whether the decoder picks the best of several masks (SAM 2's ``_use_multimask``): on an
        object's first prompt, or on every frame with ``multimask_output_for_tracking``, for
        ``multimask_min_pt_num <= num_points <= multimask_max_pt_num`` (a tracked frame has 0)."""
        return (
            self.multimask_output_in_sam
            and (is_init or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict
    spec: ModelSpec
    constants: dict[str, np.ndarray]

    def graph_path(self, name: str, suffix: str = ".onnx") -> Path:
        return self.path.parent / (name + suffix)

    @property
    def image_batch(self) -> int | None:
        """The frames the image encoder takes in one call: None (any number: the ``frames`` axis of
        exports since issue 19), or its fixed batch (1: an older export, run one frame at a time)."""
        return image_batch(self.data)


def image_batch(data: dict) -> int | None:
    """:attr:`Manifest.image_batch` of a manifest's content: the first dimension of the image
    encoder's ``image`` input as the export recorded it (a name: dynamic; a number: fixed)."""
    shape = data.get("graphs", {}).get("image_encoder", {}).get("inputs", {}).get("image", {}).get("shape")
    if not shape:
        return 1  # not recorded: one frame at a time is always valid
    return None if not isinstance(shape[0], int) else int(shape[0])


#: Settings an older export may lack (ModelSpec has the value they had then).
_OPTIONAL_FLAGS = {"mem_tokens", "mem_rope_grid", "memory_attention_layers", "add_tpos_enc_to_obj_ptrs",
                   "no_obj_embed_spatial"}


def _check_types(path: Path, data) -> None:
    """The manifest's structure and the type of every model setting (EngineError naming the field)."""
    if not isinstance(data, dict):
        raise EngineError(f"{path} is not a JSON object (got {type(data).__name__}): re-export")
    for key, kind in (("flags", dict), ("graphs", dict), ("model", str), ("constants", str)):
        if key in data and not isinstance(data[key], kind):
            raise EngineError(f"{path}: {key!r} must be a JSON {kind.__name__}, got {data[key]!r:.60}")
    for name, graph in data.get("graphs", {}).items():
        if not isinstance(graph, dict) or not all(isinstance(graph.get(k, {}), dict) for k in ("inputs", "outputs")):
            raise EngineError(f"{path}: graphs.{name} must be an object with 'inputs' and 'outputs' objects")
    flags = data.get("flags", {})
    for name, f in ModelSpec.__dataclass_fields__.items():
        if name == "model" or name not in flags:
            continue
        v, kind = flags[name], f.type.split(" |")[0]
        ok = {"int": isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "bool": isinstance(v, bool) or (v is None and "None" in f.type),
              "tuple[int, int]": isinstance(v, list) and len(v) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)}.get(kind, True)
        if not ok:
            raise EngineError(f"{path}: flags.{name} must be {'an int >= 0' if kind == 'int' else kind}, got {v!r:.60} "
                              "(a damaged manifest: re-export)")
    if isinstance(data.get("image_size"), int) and "image_size" in flags and data["image_size"] != flags["image_size"]:
        raise EngineError(f"{path}: image_size {data['image_size']} and flags.image_size {flags['image_size']} differ")


def spec_input_dims(spec: ModelSpec) -> dict[str, tuple[int | None, ...]]:
    """The graph inputs whose shape the model settings fix (None: any size): the graphs of an export
    must have these, or the manifest does not belong to them."""
    f, h, lr = spec.feat_size, spec.hidden_dim, spec.low_res_size
    return {"image": (None, 3, spec.image_size, spec.image_size), "image_embed": (None, h, f, f),
            "pix_feat": (None, h, f, f), "mem_feats": (None, None, spec.mem_tokens, spec.mem_dim),
            "obj_ptrs": (None, None, h), "mask_input": (None, 1, lr, lr), "low_res_masks": (None, 1, lr, lr),
            "feat_s0": (None, None, 4 * f, 4 * f), "feat_s1": (None, None, 2 * f, 2 * f)}


def check_graph_inputs(manifest: Manifest, graph: str, inputs: dict[str, list]) -> None:
    """Raise EngineError when a graph's input shapes (static dims; names, None or -1 are dynamic)
    contradict the manifest's model settings: graphs and manifest from different exports."""
    want = spec_input_dims(manifest.spec)
    for name, shape in inputs.items():
        expected = want.get(name)
        if expected is None:
            continue
        got = [d if isinstance(d, int) and d >= 0 else None for d in shape]
        if len(got) != len(expected) or any(e is not None and g is not None and e != g for e, g in zip(expected, got)):
            raise EngineError(
                f"{graph}.onnx input {name} has shape {list(shape)}, but the manifest's model settings "
                f"({manifest.spec.model} at {manifest.spec.image_size} px) need {[e if e else '*' for e in expected]}: "
                "the graphs and manifest.json come from different exports (re-export)")


def load_manifest(engine_dir: str | Path) -> Manifest:
    """Read and check ``engine_dir/manifest.json``; raise :class:`EngineError` with the reason."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST_NAME
    try:
        is_dir = engine_dir.is_dir()
    except OSError as e:  # a name too long, a path the system cannot look up
        raise EngineError(f"engine directory {str(engine_dir)[:200]!r} cannot be used: {e.strerror}") from None
    if not is_dir:
        raise EngineError(f"engine directory {engine_dir} does not exist (run `sam2-ros export` first)")
    if not path.is_file():
        raise EngineError(f"{path} is missing: {engine_dir} is not an export from `sam2-ros export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise EngineError(f"{path} is not valid JSON: {e}") from None
    _check_types(path, data)
    if data.get("format_version") != MANIFEST_VERSION:
        raise EngineError(
            f"{path} has format_version {data.get('format_version')!r}; this sam2_ros reads {MANIFEST_VERSION}: re-export"
        )
    flags = data.get("flags", {})
    try:
        optional = _OPTIONAL_FLAGS & set(flags)
        spec = ModelSpec(model=data["model"], **{k: flags[k] for k in ModelSpec.__dataclass_fields__
                                                 if k != "model" and (k not in _OPTIONAL_FLAGS or k in optional)})
    except KeyError as e:
        raise EngineError(f"{path} lacks the model setting {e}; re-export with this sam2_ros") from None
    missing = [g for g in GRAPH_NAMES if g not in data.get("graphs", {})]
    if missing:
        raise EngineError(f"{path} lists no graph for {', '.join(missing)}")
    consts_path = engine_dir / data.get("constants", "constants.npz")
    if not consts_path.is_file():
        raise EngineError(f"{consts_path} is missing")
    try:
        with np.load(consts_path) as z:
            constants = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, pickle and format errors of a damaged file
        raise EngineError(f"{consts_path} cannot be read ({type(e).__name__}: {e}): re-export") from None
    return Manifest(path=path, data=data, spec=spec, constants=constants)
