"""The Colab notebooks in colab/: each one runs headlessly on CPU, start to finish, with tiny
parameters; and the copies in git are clean (no outputs), carry the Open-in-Colab badge, an
install cell that only installs when jaxlm is missing, and a `parameters` cell.

Execution follows papermill's convention without needing papermill: the notebook's code cell
tagged `parameters` holds its size knobs, and a cell tagged `injected-parameters` with the CI
values is inserted right after it. The kernel is the `python3` kernelspec that ipykernel installs
(jupyter_client starts it with this interpreter, sys.executable), started in colab/ as a user's
Jupyter would start it, with JAX_PLATFORMS=cpu (one CPU device: the sharding notebook must
find its 8 devices itself) and HTTP(S) proxies that lead nowhere (the notebooks run offline).
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO_ROOT

COLAB = REPO_ROOT / "colab"
REPO_URL = "https://github.com/jaxlm/jaxlm"
NOTEBOOKS = sorted(p.stem for p in COLAB.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds, per cell


def ci_parameters(name: str, workdir: pathlib.Path) -> dict:
    """The tiny values CI runs each notebook with (every key must be a knob of the notebook)."""
    tiny_model = dict(D_MODEL=32, N_LAYERS=1, N_HEADS=2, SEQ_LEN=64)
    return {
        "quickstart": dict(
            WORKDIR=str(workdir / "quickstart"), **tiny_model, STEPS=30, BATCH_SIZE=8,
            WARMUP_STEPS=5, LOG_EVERY=5, EVAL_EVERY=15, EVAL_BATCHES=2, FINAL_EVAL_BATCHES=2,
            PLOT_EVERY_S=0.5, MAX_NEW_TOKENS=24,
        ),
        "scaling_laws": dict(
            SOURCE="csv", WORKDIR=str(workdir / "scaling"), N_BOOT=20,  # RUNS_CSV: its default
        ),
        "sharding": dict(
            FAKE_CPU_DEVICES=8, WORKDIR=str(workdir / "sharding"),
            **{**tiny_model, "N_HEADS": 4}, STEPS=6, BATCH_SIZE=8,
        ),
    }[name]


def kernel_env(name: str) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TFDS_DISABLE_GCS", "1")
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"  # the discard port: a download fails at once
    env["no_proxy"] = env["NO_PROXY"] = ""
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if not any(f.startswith("--xla_backend_optimization_level") for f in flags):
        flags.append("--xla_backend_optimization_level=0")  # tiny models: compile fast
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(COLAB / f"{name}.ipynb", as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> tuple[int, nbformat.NotebookNode]:
    found = [(i, c) for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(found) == 1, f"{len(found)} code cells tagged 'parameters' (need exactly 1)"
    return found[0]


def knobs(cell: nbformat.NotebookNode) -> dict:
    """NAME = literal assignments of a parameters cell (anything else there is an error)."""
    out = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
            node.targets[0], ast.Name), f"parameters cell: not a NAME = value line: " \
                                        f"{ast.get_source_segment(cell.source, node)}"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_there_are_notebooks():
    assert set(NOTEBOOKS) >= {"quickstart", "scaling_laws", "sharding"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean(name):
    """Stored without outputs, valid, with the badge, the guarded install and the parameters."""
    nb = read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a code cell has outputs (strip them)"
            assert cell.execution_count is None, f"{name}: a code cell has an execution count"
        assert "attachments" not in cell or not cell.attachments
    assert "widgets" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"

    first = nb.cells[0]
    badge_url = f"https://colab.research.google.com/github/jaxlm/jaxlm/blob/main/colab/{name}.ipynb"
    assert first.cell_type == "markdown" and f"]({badge_url})" in first.source, \
        f"{name}: the first cell needs the Open-in-Colab badge linking {badge_url}"
    assert "colab-badge.svg" in first.source

    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    install = sources[0]  # the first code cell installs, before anything imports jaxlm or JAX
    assert install.count(f'REPO_URL = "{REPO_URL}"') == 1
    assert sum(s.count(REPO_URL) for s in sources) == 1, "define the repo URL once, in REPO_URL"
    assert 'importlib.util.find_spec("jaxlm") is None' in install, \
        "install only where jaxlm is missing"
    assert re.search(r"pip.*install", install)
    assert not re.search(r"^\s*import (jax|jaxlm)\b", install, re.M)
    for n, src in enumerate(sources[1:], 1):  # only the install cell may reach the network
        assert not re.search(r"REPO_URL|https?://|urllib|requests\.|\b(wget|curl)\b|git clone",
                             src), f"{name}: code cell {n} downloads (cells after install " \
                                   f"run offline, from the checkout)"

    for n, src in enumerate(sources):  # Python syntax (IPython magics aside)
        python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                            for line in src.splitlines())
        compile(python, f"{name}.ipynb code cell {n}", "exec")

    i, cell = parameters_cell(nb)
    params = knobs(cell)
    assert "WORKDIR" in params
    missing = set(ci_parameters(name, pathlib.Path("/tmp"))) - set(params)
    assert not missing, f"{name}: CI overrides knobs the notebook does not have: {missing}"
    for c in nb.cells[:i]:  # nothing before the knobs uses them
        assert c.cell_type == "markdown" or c.source == install


def execute(name: str, workdir: pathlib.Path) -> nbformat.NotebookNode:
    nb = read(name)
    i, _ = parameters_cell(nb)
    values = ci_parameters(name, workdir)
    lines = ["# Parameters injected by tests/notebooks/test_notebooks.py (CI: tiny and offline)"]
    lines += [f"{k} = {v!r}" for k, v in values.items()]
    lines += ["import sys as _sys",  # the kernel is this interpreter (this venv's python)
              f"assert _sys.executable == {sys.executable!r}, _sys.executable"]
    injected = nbformat.v4.new_code_cell("\n".join(lines))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, injected)
    # started in colab/, as Jupyter starts a notebook opened there
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(COLAB)}})
    try:
        client.execute(env=kernel_env(name))
    finally:  # the executed notebook, outputs and all, for a look after a failure
        nbformat.write(nb, workdir / f"{name}.executed.ipynb")
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return "\n".join(parts)


def has_image(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))

@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.parametrize("has_jax", [True, False])
@pytest.mark.parametrize("where", ["colab", "checkout"])
def test_install_cell_keeps_the_runtimes_jax(name, has_jax, where, tmp_path, monkeypatch):
    """Run the install cell where jaxlm is missing, recording the subprocess calls: in Colab
    (a folder without a checkout) it clones REPO_URL and installs the clone; run from colab/ of a
    checkout it installs that checkout and downloads nothing else. Where JAX is importable
    (Colab ships it matched to its accelerator) pip is asked for jaxlm alone; only a runtime
    without JAX is given a JAX build."""
    import importlib.util
    import subprocess

    install = [c.source for c in nbformat.read(COLAB / f"{name}.ipynb", as_version=4).cells
               if c.cell_type == "code"][0]
    monkeypatch.chdir(tmp_path if where == "colab" else COLAB)
    calls = []
    real_find_spec = importlib.util.find_spec

    def find_spec(mod, *a):
        if mod == "jaxlm" or (mod == "jax" and not has_jax):
            return None
        return real_find_spec(mod, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "check_call", lambda args, **kw: calls.append(list(args)))
    scope = {"__name__": "__main__"}
    exec(compile(install, f"{name}.ipynb install cell", "exec"), scope)
    if where == "colab":
        assert calls[0][:2] == ["git", "clone"] and REPO_URL in calls[0], calls
        root = tmp_path / "jaxlm"
        calls = calls[1:]
    else:
        root = REPO_ROOT
    assert scope["REPO_ROOT"] == root.resolve()
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"], calls
    wanted = [a for a in calls[0][4:] if not a.startswith("-")]
    assert wanted[0] == str(root.resolve())
    jax_reqs = [a for a in wanted[1:] if re.match(r"jax\b", a)]
    assert jax_reqs == ([] if has_jax else [jax_reqs[0]]), wanted
    assert not any("<" in a for a in wanted), "no upper bound that could downgrade JAX"


@pytest.mark.parametrize("runtime_devices, fake", [(1, True), (4, True), (8, False)])
def test_sharding_notebook_picks_fake_cpu_devices_on_a_small_runtime(runtime_devices, fake,
                                                                     monkeypatch):
    """The device cell before `import jax`, on a runtime whose JAX sees `runtime_devices`
    devices (1: a TPU v5e-1 or one GPU): with fewer than 8 it makes JAX start on the CPU split
    into 8 devices (JAX_PLATFORMS and XLA_FLAGS); with 8 it changes nothing."""
    import subprocess

    cells = [c.source for c in read("sharding").cells if c.cell_type == "code"]
    (cell,) = [c for c in cells if re.search(r"^import jax$", c, re.M)]
    before_jax = cell[:re.search(r"^import jax$", cell, re.M).start()]
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    probes = []

    def run(args, **kw):  # the subprocess that asks JAX for its device count
        probes.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=f"{runtime_devices}\n", stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    scope = {"FAKE_CPU_DEVICES": 8, "__name__": "__main__"}
    exec(compile(before_jax, "sharding.ipynb device cell", "exec"), scope)
    assert len(probes) == 1 and "jax.device_count()" in " ".join(probes[0])
    flags = os.environ["XLA_FLAGS"].split()
    if fake:
        assert os.environ.get("JAX_PLATFORMS") == "cpu"
        assert flags == ["--xla_backend_optimization_level=0",
                         "--xla_force_host_platform_device_count=8"]
    else:
        assert "JAX_PLATFORMS" not in os.environ
        assert flags == ["--xla_backend_optimization_level=0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    """Every cell runs without an error (nbclient raises CellExecutionError on the first)."""
    t0 = time.time()
    before = sorted(COLAB.rglob("*"))
    nb = execute(name, tmp_path)
    text = outputs_text(nb)
    assert "jaxlm is already installed" in text  # the install cell did not touch the network
    assert f"repository: {REPO_ROOT}" in text  # found from colab/
    assert sorted(COLAB.rglob("*")) == before, "the notebook wrote into colab/"
    assert has_image(nb), f"{name}: no plot was shown"
    if name == "quickstart":
        assert "device: CPU" in text
        assert "eval_bpb" in text and "reloaded parameters equal the trained ones: True" in text
        assert (tmp_path / "quickstart" / "checkpoints").is_dir()
    elif name == "scaling_laws":
        assert "compute-optimal" in text
        assert f"runs: {REPO_ROOT / 'benchmarks' / 'cpu_demo' / 'runs.csv'}" in text
        assert (tmp_path / "scaling" / "fit" / "fit.json").is_file()
    elif name == "sharding":  # on this one-device runtime: 8 fake CPU devices, two meshes
        assert "running on 8 fake CPU devices" in text
        assert "8 x cpu" in text.lower() or "8 x TFRT_CPU" in text
        assert "PartitionSpec" in text
        found = re.findall(r"^(fsdp \+ tensor|data parallel) +mesh (\{.*?\}): "
                           r"h_0/mlp/up/kernel \(\d+, \d+\) is held as (\(\d+, \d+\)) per device",
                           text, re.M)
        meshes = {run: ast.literal_eval(mesh) for run, mesh, _ in found}
        specs = {run: spec for run, _, spec in found}
        assert set(meshes) == {"fsdp + tensor", "data parallel"}, text
        for mesh in meshes.values():
            assert mesh["data"] * mesh["fsdp"] * mesh["tensor"] == 8, meshes
        assert meshes["fsdp + tensor"] != meshes["data parallel"], meshes
        assert meshes["fsdp + tensor"]["fsdp"] > 1 and meshes["data parallel"]["data"] == 8
        d, m = ci_parameters(name, tmp_path)["D_MODEL"], meshes["fsdp + tensor"]
        assert specs == {"fsdp + tensor": f"({d // m['fsdp']}, {4 * d // m['tensor']})",
                         "data parallel": f"({d}, {4 * d})"}, specs  # the MLP's up kernel
        assert "speed: not measured here" in text  # fake devices: no speed advice
    print(f"{name}: {time.time() - t0:.1f}s")
