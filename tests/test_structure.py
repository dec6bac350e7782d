"""The package's shape, as the architecture promises it (README "Layout"): data flows one way
through the layers below, and every module and function stays small enough to read.

A failure names the import (or the module, or the function) that breaks the rule. Fix it by
moving the code to the layer it belongs to, not by adding a function-level import: those are
walked too."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxlm"

# bottom to top; a module imports only from its own layer or below (longest prefix wins)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("jaxlm.errors", "jaxlm.version", "jaxlm.xla_flags", "jaxlm.progress",
                    "jaxlm.paths",
                    "jaxlm.config", "jaxlm.config_rules", "jaxlm.flops", "jaxlm.sharding",
                    "jaxlm.config_reference")),
    ("data, models, weight formats", ("jaxlm.data", "jaxlm.models", "jaxlm.interop.hf_gpt2",
                                      "jaxlm.interop.hf_llama", "jaxlm.interop.hf",
                                      "jaxlm.interop.lstm_torch")),
    ("train core (pure)", ("jaxlm.train.step", "jaxlm.train.state", "jaxlm.train.optim",
                           "jaxlm.train.param_groups",
                           "jaxlm.evaluate")),
    ("run directory, checkpoints", ("jaxlm.checkpoint", "jaxlm.rundir", "jaxlm.rundir_lock",
                                    "jaxlm.init_from")),
    ("generation, assembly, run records", ("jaxlm.generate", "jaxlm.text_generation",
                                           "jaxlm.train.setup",
                                           "jaxlm.train.memory",
                                           "jaxlm.train.metrics", "jaxlm.train.preemption",
                                           "jaxlm.train.checkpoint_clock")),
    ("training and evaluation runs", ("jaxlm.train.start", "jaxlm.train.branch",
                                      "jaxlm.train.loop",
                                      "jaxlm.eval_run")),
    ("interop, scaling", ("jaxlm.interop", "jaxlm.scaling")),
    ("command line", ("jaxlm.cli", "jaxlm.__main__")),
    ("package face", ("jaxlm",)),
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 120


def _layer(module: str) -> int:
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: pathlib.Path, known: dict) -> list[tuple[str, int]]:
    """(imported jaxlm module, line) for every import in the file, function-level included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("jaxlm")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("jaxlm"):
            for a in node.names:  # `from jaxlm.x import y`: y may be a module itself
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in known else node.module, node.lineno))
    return found


def test_no_module_imports_from_a_layer_above_it():
    known = _modules()
    upward = []
    for module, path in known.items():
        for target, line in _imports(module, path, known):
            if _layer(target) > _layer(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} "
                              f"({LAYERS[_layer(module)][0]}) imports {target} "
                              f"({LAYERS[_layer(target)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


@pytest.mark.parametrize("module,path", sorted(_modules().items()))
def test_modules_and_functions_stay_small(module, path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, (
        f"{module} has {len(lines)} lines (> {MAX_MODULE_LINES}): split it along a seam")
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION_LINES, (
                f"{module}.{node.name} (line {node.lineno}) has {n} lines "
                f"(> {MAX_FUNCTION_LINES})")
