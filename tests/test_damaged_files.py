"""Regression tests of the defects the generated inputs found (tests/test_ros_generated_inputs.py):
a damaged prompts file or engine directory is refused with the package's own error naming the
problem (PromptsFileError, EngineError), never a raw TypeError / AttributeError / ONNX Runtime
error, and never loaded to fail later in the middle of tracking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sam2_ros.backends import load_backend
from sam2_ros.errors import EngineError, PromptsFileError
from sam2_ros.io.prompts_file import load_prompts
from sam2_ros.manifest import load_manifest


@pytest.mark.parametrize("text, message", [
    ('[{"frame": null, "object_id": 1, "box": [1, 2, 3, 4]}]', "'frame' must be a frame index"),  # was TypeError
    ('[{"frame": 0, "object_id": [1], "box": [1, 2, 3, 4]}]', "'object_id' must be an integer"),  # was TypeError
    ('[{"frame": 0, "object_id": 1, "points": [[{"a": 1}, 2]], "labels": [1]}]', "'points' must be a list of numbers"),
    ('[{"frame": 0, "object_id": 1, "mask": 5}]', "'mask' must be the path of a PNG"),  # was TypeError
    ('[{"frame": 0, "object_id": 1, "points": [[1, 2, 3]], "labels": [1]}]', "'points' must have shape N x 2"),
    ('[{"frame": 0, "object_id": 1, "points": [[1, 2]], "labels": [2]}]', "'labels' must be a list of 1 values"),
    ('[{"frame": 0, "object_id": 1, "box": [1, 2, NaN, 4]}]', "'box' has values that are not finite"),
    ('[{"frame": 0, "object_id": 1, "box": [1, 2, 1e39, 4]}]', "not finite \\(as float32\\)"),
    ('[{"frame": 0, "object_id": 1, "points": [[1, 2]]}]', "'points' and 'labels' must be given together"),
    ('[{"frame": 0, "object_id": 1}]', "an empty prompt"),
])
def test_bad_prompts_file_entries_raise_prompts_file_error(tmp_path, text, message):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    with pytest.raises(PromptsFileError, match=message) as e:
        load_prompts(path)
    assert f"{path} entry 0" in str(e.value)


def test_a_prompts_file_that_is_not_utf8_raises_prompts_file_error(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_bytes(b'[{"frame": 0, "object_id": 1, "label": "\xff"}]')  # was UnicodeDecodeError
    with pytest.raises(PromptsFileError, match="cannot read prompts file"):
        load_prompts(path)
    path.write_text('[{"frame": 2, "object_id": 1, "points": [[1, 2]], "labels": [1]}, '
                    '{"frame": 0, "object_id": 1, "box": [1, 2, 3, 4]}]')
    assert [p.frame for p in load_prompts(path)] == [0, 2]  # a good file still loads, sorted


def _damaged_copy(src: Path, dst: Path, edit=None, constants: bytes | None = None) -> Path:
    """``src`` with every file linked, the manifest edited by ``edit`` or the constants replaced."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    if edit is not None:
        data = json.loads((src / "manifest.json").read_text())
        data = edit(data) or data
        (dst / "manifest.json").unlink()
        (dst / "manifest.json").write_text(json.dumps(data))
    if constants is not None:
        (dst / "constants.npz").unlink()
        (dst / "constants.npz").write_bytes(constants)
    return dst


def _other_image_size(m):
    m["image_size"] = m["flags"]["image_size"] = 64
    m["graphs"]["image_encoder"]["inputs"]["image"]["shape"][2:] = [64, 64]


def _flag(name, value):
    def edit(m):
        m["flags"][name] = value
    return edit


@pytest.mark.parametrize("edit, constants, message", [
    # loaded, then ONNX Runtime's InvalidArgument on the first frame
    (_other_image_size, None, "image_encoder.onnx input image has shape .* the graphs and manifest.json come from"),
    (_flag("num_maskmem", "7"), None, "flags.num_maskmem must be an int"),  # was a TypeError in Tracker()
    (_flag("mem_rope_grid", [8]), None, "flags.mem_rope_grid must be tuple"),
    (_flag("hidden_dim", 512), None, "input image_embed has shape"),
    (lambda m: [1], None, "is not a JSON object"),  # was AttributeError
    (lambda m: {**m, "flags": [1]}, None, "'flags' must be a JSON dict"),
    (lambda m: {**m, "graphs": {**m["graphs"], "mask_decoder": 3}}, None, "graphs.mask_decoder must be an object"),
    (None, os.urandom(300), "constants.npz cannot be read"),  # was ValueError / BadZipFile from numpy
])
def test_damaged_engine_directories_raise_engine_error(tiny_export_128, tmp_path, edit, constants, message):
    d = _damaged_copy(tiny_export_128, tmp_path / "engine", edit, constants)
    with pytest.raises(EngineError, match=message):
        load_backend(d, "onnxruntime", intra_op_threads=1)


def test_a_manifest_that_is_not_utf8_raises_engine_error(tiny_export_128, tmp_path):
    d = _damaged_copy(tiny_export_128, tmp_path / "engine")
    data = (tiny_export_128 / "manifest.json").read_bytes()
    (d / "manifest.json").unlink()
    (d / "manifest.json").write_bytes(data[:100] + b"\xff\xfe" + data[102:])  # was UnicodeDecodeError
    with pytest.raises(EngineError, match="is not valid JSON"):
        load_manifest(d)
    assert load_manifest(tiny_export_128).spec.image_size == 128


def test_an_engine_dir_name_too_long_raises_engine_error(tmp_path):
    with pytest.raises(EngineError, match="cannot be used: File name too long"):  # was OSError from is_dir()
        load_backend(tmp_path / ("x" * 300), "onnxruntime")
