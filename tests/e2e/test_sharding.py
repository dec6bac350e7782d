"""Sharding on 8 fake CPU devices (tests/multidevice, run in its own process because the
device count is fixed when JAX starts) and multi-host training with two real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, TINY, _fail_msg, _step_records


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                     if "xla_force_host_platform_device_count" not in f)
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n_devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
def test_multidevice_suite_on_8_fake_devices():
    """Mesh equivalence, exact PartitionSpecs, FSDP shard sizes, grad accumulation, remat, scan."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice"],
        cwd=REPO_ROOT, env=_env(8), capture_output=True, text=True, timeout=900,
    )
    tail = "\n".join(proc.stdout.splitlines()[-60:])
    assert proc.returncode == 0, f"tests/multidevice failed:\n{tail}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout, tail


# ---------------------------------------------------------------------------------------------
# two processes x 2 devices == one process x 4 devices

MH = [*TINY, "train.steps=6", "train.log_every=1", "train.checkpoint_every=3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cmd(workdir, *extra) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), "--workdir", str(workdir), *MH, *extra]


def _losses(workdir) -> list[float]:
    return [r["loss"] for r in _step_records(workdir)]


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    out = {}
    for name, mesh in (("data", []), ("fsdp_tensor", ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2"])):
        proc = subprocess.run(_train_cmd(root / name, *mesh), cwd=REPO_ROOT, env=_env(4),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, _fail_msg(proc)
        out[name] = root / name
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mesh_name,mesh", [
    ("data", []), ("fsdp_tensor", ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2"])])
def test_two_processes_reproduce_one(tmp_path, single_process_runs, mesh_name, mesh):
    workdir = tmp_path / "run"
    port = _free_port()
    procs = [
        subprocess.Popen(
            _train_cmd(workdir, *mesh, f"distributed.coordinator_address=127.0.0.1:{port}",
                       "distributed.num_processes=2", f"distributed.process_id={i}"),
            cwd=REPO_ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out, err))
    for i, (rc, out, err) in enumerate(outs):
        assert rc == 0, f"process {i} exit {rc}\n{out[-2000:]}\n{err[-4000:]}"

    # process 0 writes the logs and the summary; process 1 stays quiet
    assert "run directory:" in outs[0][1] and "run directory:" not in outs[1][1]
    assert "jaxlm:" in outs[0][2] and "jaxlm:" not in outs[1][2]
    header = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert header["processes"] == 2 and header["devices"].startswith("4x")
    assert header["distributed"].startswith("coordinator 127.0.0.1")

    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == list(range(1, 7)), "each step logged once, by one process"
    expected = _losses(single_process_runs[mesh_name])
    assert _losses(workdir) == pytest.approx(expected, abs=1e-5)
    # checkpoints were written by both processes together (Orbax multi-host save)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) \
        == ["3", "6"]
