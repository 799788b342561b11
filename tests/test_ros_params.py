"""Parameters: the table, the YAML file under config/, and the launch file's references."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sam2_ros.ros.params import PARAMS, PARAMS_BY_NAME, flatten, load_params_file, validate_parameter

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "sam2_tracker.yaml"


def test_config_file_sets_every_parameter_with_its_default():
    params = load_params_file(CONFIG)
    assert set(params) == set(PARAMS_BY_NAME)
    for name, value in params.items():
        assert value == PARAMS_BY_NAME[name].default, name


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("backend", "tflite", "backend must be one of onnxruntime, openvino, torch, tensorrt"),
        ("max_objects", 0, r"max_objects must be in \[1, 4096\]"),
        ("max_objects", 2.5, "max_objects must be of type integer"),
        ("max_objects", True, "max_objects must be of type integer"),
        ("cond_slots", 65, r"cond_slots must be in \[1, 64\]"),
        ("mask_threshold", float("nan"), "mask_threshold must be in"),
        ("image_transport", "theora", "image_transport must be one of raw, compressed"),
        ("input_qos.reliability", "sometimes", "must be one of best_effort, reliable"),
        ("input_qos.depth", 0, r"input_qos.depth must be in \[1, 100\]"),
        ("publish.overlay", "yes", "publish.overlay must be of type bool"),
        ("providers", "cuda,npu", r"providers must be among cpu, cuda, tensorrt; got \['npu'\]"),
        ("service_timeout", 0.0, "service_timeout must be in"),
        ("max_object", 3, "unknown parameter 'max_object'"),
        ("cameras", "front", "cameras must be of type string_array"),
        ("cameras", ["front", "2nd"], r"cameras must be ROS names .*got \['2nd'\]"),
        ("cameras", ["front/", "a b"], r"got \['front/', 'a b'\]"),
        ("cameras", ["front", "front"], "cameras must be unique"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name, value, error):
    import re

    reason = validate_parameter(name, value)
    assert reason is not None and re.search(error, reason), reason


def test_good_values_pass():
    for spec in PARAMS:
        assert validate_parameter(spec.name, spec.default) is None, spec.name
    assert validate_parameter("providers", "CUDA, cpu") is None
    assert validate_parameter("mask_threshold", 1) is None  # an integer is fine for a double
    assert validate_parameter("cameras", ["front", "wrist_left", "robot1/front"]) is None


def test_bad_file_names_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    max_objects: 0\n    publish: {overlay: 3}\n")
    with pytest.raises(ValueError) as e:
        load_params_file(bad)
    assert "max_objects must be in" in str(e.value) and "publish.overlay must be of type bool" in str(e.value)
    other = tmp_path / "other.yaml"
    other.write_text("some_other_node:\n  ros__parameters: {x: 1}\n")
    with pytest.raises(ValueError, match="no parameters for node 'sam2_tracker'"):
        load_params_file(other)


def test_flatten_nests_with_dots():
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_launch_file_is_valid_and_uses_the_installed_config():
    source = (REPO / "launch" / "sam2_tracker.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert '"config", "sam2_tracker.yaml"' in source and 'executable="sam2_tracker"' in source
    assert 'overrides["cameras"]' in source  # the launch argument cameras reaches the node


#: rosdep keys of the node's third-party imports (stdlib and pip-only ones aside)
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "PIL": "python3-pil",
               "tqdm": "python3-tqdm"}
#: not in rosdep: installed with pip, named in package.xml's comment
PIP_ONLY = {"onnxruntime"}


def _node_modules() -> dict[str, set[str]]:
    """Every sam2_ros module the node imports, transitively (lazy imports included): name -> imports."""
    import ast

    def path_of(mod):
        base = REPO / mod.replace(".", "/")
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.is_file():
                return p
        return None

    seen, todo = {}, ["sam2_ros.ros.node"]
    while todo:
        mod = todo.pop()
        if mod in seen or path_of(mod) is None:
            continue
        imports = set()
        for node in ast.walk(ast.parse(path_of(mod).read_text())):
            if isinstance(node, ast.Import):
                imports |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imports.add(node.module)
                imports |= {f"{node.module}.{a.name}" for a in node.names}
        seen[mod] = imports
        parts = mod.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # parent packages run first
        todo += [m for m in imports if m.startswith("sam2_ros.") or m == "sam2_ros"]
    return seen


def test_package_xml_declares_what_the_node_imports():
    import re
    import sys

    deps = set(re.findall(r"<exec_depend>([^<]+)</exec_depend>", (REPO / "package.xml").read_text()))
    modules = _node_modules()
    assert {"sam2_ros.tracker", "sam2_ros.preprocess", "sam2_ros.ros.convert"} <= set(modules)
    third_party = {m.split(".")[0] for imports in modules.values() for m in imports} - set(sys.stdlib_module_names)
    third_party -= {"sam2_ros"} | PIP_ONLY
    ros = {m for m in third_party if m.endswith(("_msgs", "_interfaces")) or m in ("rclpy", "cv_bridge")}
    unknown = third_party - ros - set(ROSDEP_KEYS)
    assert not unknown, f"the node imports {sorted(unknown)}: add them to package.xml and to ROSDEP_KEYS"
    needed = ros | {ROSDEP_KEYS[m] for m in third_party - ros}
    assert needed <= deps, f"package.xml lacks <exec_depend> for {sorted(needed - deps)}"
    assert "python3-pil" in needed  # preprocessing resizes frames with Pillow


def test_docs_show_the_current_parameter_table():
    from sam2_ros.ros.params import markdown_table

    assert markdown_table() in (REPO / "docs" / "ROS.md").read_text(), (
        "docs/ROS.md: paste the output of sam2_ros.ros.params.markdown_table()")

