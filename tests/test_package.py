"""The package as a whole: one home per concept, imports only downwards, no private names across modules.

The layers, lowest first: a module imports (eagerly, lazily or for type checking) only from lower layers or its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stlib"

LAYERS = [
    {"__init__", "assets", "hardware", "images", "losses", "color", "options", "exercises", "artifacts"},  # basics
    {"superres"},  # the super-resolution task's data and scores (images)
    {"vgg", "transformer", "data", "plots"},  # the loss network, the image network, photos, figures
    {"perceptual", "checkpoint", "backends", "prune", "runlog"},  # objective, model files, engines, pruning, run logs
    {"gatys", "train", "stylize", "upscale", "distill", "temporal"},  # the two methods and what uses their results
    {"video", "desktop", "webcam"},  # frames and live sources
    {"cli", "__main__"},  # the command line
]
LAYER = {module: level for level, modules in enumerate(LAYERS) for module in modules}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported stlib module, names, line) for every import of a stlib module in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("stlib")):
            module = (node.module or "").removeprefix("stlib").lstrip(".") or "__init__"
            names = [a.name for a in node.names]
            if module == "__init__" and node.level == 1:  # from . import gatys
                found += [(n if not n.startswith("__") else "__init__", [n], node.lineno) for n in names]
            else:
                found.append((module.split(".")[0], names, node.lineno))
    return found


MODULES = sorted(PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert {p.stem for p in MODULES} <= set(LAYER), "add the new module to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_imports_go_downwards_and_take_no_private_names(path):
    for module, names, line in _imports(path):
        assert LAYER[module] <= LAYER[path.stem], f"{path.name}:{line} imports the higher module {module}"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.name}:{line} imports private {', '.join(private)} from {module}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_function_is_longer_than_80_lines(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{path.name}:{node.lineno} {node.name} has {length} lines"


def test_the_normalisation_of_the_objective_exists_once():
    # A target's magnitude (content: mean square of features; style: squared norm of a Gram matrix) divides the
    # loss terms in stlib.perceptual only; stlib.losses squares raw differences (the unnormalised terms).
    magnitude = re.compile(r"\.pow\(2\)\.(mean|sum)\(\)")
    for path in (p for p in MODULES if p.stem != "losses"):
        found = magnitude.findall(path.read_text(encoding="utf-8"))
        assert (len(found) == 2) if path.stem == "perceptual" else not found, (path.name, found)


def test_only_the_figures_import_matplotlib():
    # Training, inference and the command line run without matplotlib: stlib.plots alone draws (and none imports it).
    drawing = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] == "matplotlib" for name in names):
                drawing.add(path.stem)
    assert drawing == {"plots"}
    assert not [module for path in MODULES for module, _, _ in _imports(path) if module == "plots"]


def _spin_settings(first: str = "", **env: str) -> list:
    """`short_openmp_spin()`'s answer, then GOMP_SPINCOUNT and KMP_BLOCKTIME, in a fresh interpreter with `env` (the
    three variables unset otherwise) after the statement `first`."""
    import json
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "STLIB_SHORT_SPIN")}
    names = "('GOMP_SPINCOUNT', 'KMP_BLOCKTIME')"
    code = (f"{first}\nimport json, os, stlib\nanswer = stlib.short_openmp_spin()\n"
            f"print(json.dumps([answer] + [os.environ.get(k) for k in {names}]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=clean | env, cwd=PACKAGE.parent, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


def test_the_short_busy_wait_is_set_before_torch_and_never_over_the_users_choice():
    """Before torch loads OpenMP: a short busy-wait; a value already set wins; too late once torch is loaded; the
    switch turns it off. Importing stlib alone changes nothing."""
    assert _spin_settings() == [True, "10000", "1"]
    assert _spin_settings(GOMP_SPINCOUNT="5", KMP_BLOCKTIME="7") == [True, "5", "7"]
    assert _spin_settings("import torch") == [False, None, None]
    assert _spin_settings(STLIB_SHORT_SPIN="0") == [False, None, None]
    assert _spin_settings("import os, stlib; assert 'GOMP_SPINCOUNT' not in os.environ")[1:] == ["10000", "1"]
