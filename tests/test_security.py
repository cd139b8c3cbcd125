"""Guards of F6's security rules over the whole source tree (platform, bundles, benchmarks)."""

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sorted(p for folder in ("platform", "benchmarks") for p in (REPO / folder).rglob("*.py"))
CONFIGS = sorted((REPO / "bundles").rglob("*.json"))


def _calls(tree: ast.AST, dotted: str):
    module, name = dotted.rsplit(".", 1)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            if target.attr == name and isinstance(target.value, ast.Name):
                if target.value.id == module:
                    yield node


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def test_the_tree_has_python_files_and_bundle_configs():
    assert len(PYTHON) > 50 and len(CONFIGS) >= 6


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(REPO)))
def test_every_torch_load_is_weights_only(path):
    tree = ast.parse(path.read_text(), str(path))
    for call in _calls(tree, "torch.load"):
        value = _keyword(call, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, (
            f"{path}:{call.lineno}: torch.load without weights_only=True"
        )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_bundle_configs_load_weights_only(path):
    for line in path.read_text().splitlines():
        if "torch.load(" in line:
            assert "weights_only=True" in line, f"{path}: {line.strip()}"


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_is_read_with_the_safe_loader_and_nothing_is_unpickled(path):
    tree = ast.parse(path.read_text(), str(path))
    for name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "pickle.load", "pickle.loads"):
        found = [call.lineno for call in _calls(tree, name)]
        assert not found, f"{path}: {name} at lines {found}"


def _pyfunc_loads(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            named = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if node.func.attr == "load_model" and named == "pyfunc":
                yield node.lineno


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(REPO)))
def test_seglab_never_loads_a_model_through_mlflow_pyfunc(path):
    # mlflow.pyfunc.load_model runs the model_code.py stored in the artifact store
    found = list(_pyfunc_loads(ast.parse(path.read_text(), str(path))))
    assert not found, f"{path}: mlflow.pyfunc.load_model at lines {found}"


def test_the_ui_binds_loopback_unless_told_otherwise():
    from seglab.cli.ui import ui
    from seglab.workflows.ui import serve_ui

    assert inspect.signature(ui).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_ui).parameters["host"].default == "127.0.0.1"


def test_the_scanners_find_what_they_look_for():
    loads = sum(len(list(_calls(ast.parse(p.read_text()), "torch.load"))) for p in PYTHON)
    assert loads >= 4  # checkpoint.py, pyfunc.py, b1_inference.py
    snippet = ast.parse("import mlflow.pyfunc\nmlflow.pyfunc.load_model('x')\nyaml.load(s)\n")
    assert list(_pyfunc_loads(snippet)) == [2]
    assert [c.lineno for c in _calls(snippet, "yaml.load")] == [3]
