"""The package's import graph points down its layers (tools/import_graph.py, docs/design.md)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools/import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_arrow_points_down_the_layers():
    g = _tool()
    edges = g.graph()
    assert {"losses", "training", "run_folder", "experiment"} <= set(edges)
    for unit in edges:
        g.layer_of(unit)  # every unit has a layer: a new one must be placed
    assert g.violations(edges) == []


def test_losses_import_nothing_of_the_package():
    assert _tool().graph()["losses"] == set()


def _write(root: pathlib.Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_upward_and_lazy_imports_are_found(tmp_path):
    g = _tool()
    pkg = tmp_path / "cclip_jax"
    _write(pkg, "__init__.py", "")
    _write(pkg, "losses/__init__.py", "def f():\n    from cclip_jax import training\n")
    _write(pkg, "training/__init__.py", "from ..losses import f\n")
    _write(pkg, "report/__main__.py", "from cclip_jax.report import x\n")
    _write(pkg, "report/__init__.py", "")
    edges = g.graph(pkg)
    assert edges["losses"] == {"training"}  # a function-level import is an arrow too
    assert edges["training"] == {"losses"}  # relative imports resolve
    assert edges["report.__main__"] == {"report"}
    assert g.violations(edges) == ["losses (layer 0) imports training (layer 6)"]


def test_a_unit_without_a_layer_is_named():
    with pytest.raises(KeyError, match="'newthing'"):
        _tool().layer_of("newthing")
