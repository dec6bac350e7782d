"""Sharding on 8 fake CPU devices (tests/multidevice, run in its own process because the
device count is fixed when JAX starts) and multi-host training with two real processes."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm import sharding
from jaxlm.config import load_config
from jaxlm.data import pipeline
from jaxlm.data.hosts import InputShard
from jaxlm.data.source import load_run_data
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.train.setup import assemble
from jaxlm.train.state import init_state

from helpers import REPO_ROOT, TINY, _fail_msg, _step_records
from helpers import losses as step_losses


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
    args = ["tests/multidevice"]
    if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers")):
        # the newest-stack CI env has no parity references; the main env runs this file
        args.append("--ignore=tests/multidevice/test_llama_mesh.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
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


def _two_processes(workdir, *extra) -> list[tuple[int, str, str]]:
    """`train.py` in two processes of 2 fake devices each: [(exit code, stdout, stderr)]."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            _train_cmd(workdir, *extra, f"distributed.coordinator_address=127.0.0.1:{port}",
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
    return outs


def _ckpts(workdir) -> list[str]:
    return sorted((p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()),
                  key=int)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_name,mesh", [
    ("data", []), ("fsdp_tensor", ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2"])])
def test_two_processes_reproduce_one(tmp_path, single_process_runs, mesh_name, mesh):
    """data.input=global: every process walks the one global stream, so two hosts train on
    exactly the data of one."""
    workdir = tmp_path / "run"
    outs = _two_processes(workdir, *mesh, "data.input=global")

    # process 0 writes the logs and the summary; process 1 stays quiet
    assert "run directory:" in outs[0][1] and "run directory:" not in outs[1][1]
    assert "jaxlm:" in outs[0][2] and "jaxlm:" not in outs[1][2]
    header = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert header["processes"] == 2 and header["devices"].startswith("4x")
    assert header["distributed"].startswith("coordinator 127.0.0.1")
    assert header["data_input"] == "global" and header["input_shards"] == 1

    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == list(range(1, 7)), "each step logged once, by one process"
    expected = _losses(single_process_runs[mesh_name])
    assert _losses(workdir) == pytest.approx(expected, abs=1e-5)
    # checkpoints were written by both processes together (Orbax multi-host save)
    assert _ckpts(workdir) == ["3", "6"]


# ---------------------------------------------------------------------------------------------
# data.input=per_host (the default) in two processes: resume, and the single-process reference

# small row-shuffle windows: the position inside the first (default, 1024-row) window is the
# same number on both hosts, and would not tell their positions apart. Dropout on: its masks
# follow a row's place in the global batch (and must resume), so the rows of each host's shard
# must land where its devices sit, not just somewhere in the batch. Checkpoints by time are
# due at every log step.
PER_HOST = ["train.log_every=2", "train.checkpoint_every_minutes=1e-9",
            "train.keep_checkpoints=10", "data.shuffle_window=2", "model.dropout=0.1"]


@pytest.fixture(scope="module")
def short_docs(tmp_path_factory, synthetic_docs) -> list[str]:
    """Overrides for a corpus of 600 one-line documents (~45 bytes, shorter than a row), so
    that a host's position (the next document of its shard, the offset into its current one)
    differs from the other host's in what it reads. With the stdlib's long documents both hosts
    are still at the same offset into their first document after a few steps, and a host that
    resumed from the other's position (a bug) read the very tokens its own gives: the resume
    check passed under that mutation, and fails under it with these. Prepared here, once, so
    the two processes do not both prepare it."""
    from jaxlm.data.corpora import load_corpus

    root = tmp_path_factory.mktemp("short_docs")
    path = root / "docs.jsonl"
    lines = [line for doc in synthetic_docs for line in doc.splitlines()]
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines),
                    encoding="utf-8")
    overrides = [f"data.corpus={path}", f"data.cache_dir={root / 'cache'}"]
    load_corpus(str(path), cache_dir=str(root / "cache"))
    return overrides


@pytest.fixture(scope="module")
def per_host_run(tmp_path_factory, short_docs) -> tuple[pathlib.Path, dict[int, float]]:
    """A finished two-process run with data.input=per_host (the default): its run directory
    (read-only: copy it to change it) and its losses by step."""
    workdir = tmp_path_factory.mktemp("per_host") / "run"
    _two_processes(workdir, *short_docs, *PER_HOST)
    return workdir, step_losses(workdir)


@pytest.mark.slow
def test_two_processes_per_host_input_resume_exactly(tmp_path, per_host_run, short_docs):
    """data.input=per_host (the default): each process packs its own half of the documents;
    both positions are checkpointed, and a resume on two hosts continues exactly. Checkpoints
    by time are taken at the same steps by both processes (a due time at every log step)."""
    workdir = tmp_path / "run"
    shutil.copytree(per_host_run[0], workdir)
    header = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert header["data_input"] == "per_host" and header["input_shards"] == 2
    # by time at log steps 2 and 4, by count at 3 and the last step: all written by both
    assert _ckpts(workdir) == ["2", "3", "4", "6"]
    # both hosts' positions, gathered into the data item process 0 wrote (Orbax's JSON file)
    position = json.loads((workdir / "checkpoints" / "3" / "data" / "metadata").read_text())
    assert position["input_shards"] == 2 and position["states"][0] != position["states"][1]
    uninterrupted = per_host_run[1]
    assert sorted(uninterrupted) == [2, 3, 4, 6]  # log steps and the eval step

    for step in ("4", "6"):  # back to step 3, then the same command again
        shutil.rmtree(workdir / "checkpoints" / step)
    outs = _two_processes(workdir, *short_docs, *PER_HOST)
    assert "resuming" in outs[0][2] + outs[0][1]
    assert step_losses(workdir) == pytest.approx(uninterrupted, abs=1e-6)


def _hosts_feed(texts, tokenizer, *, hosts: int, global_batch: int, **kwargs):
    """The (global_batch, seq_len) batches that `hosts` processes feed a per-host run, built in
    one process: one `pipeline.train_iterator` per input shard, each shard's rows placed where
    its process's devices sit. In the two-process run each process has 2 devices and
    `jax.make_mesh` lays the data axis out process by process, so process p holds rows
    [p*n, (p+1)*n) of each global batch (`sharding.local_rows`) and reads the shard
    `InputShard.of_rows` gives those rows. (Dropout makes the placement matter: swapping the
    two shards' rows changes the losses by ~1e-3.)"""
    n = global_batch // hosts
    rows = [slice(p * n, (p + 1) * n) for p in range(hosts)]
    shards = [pipeline.train_iterator(texts, tokenizer, global_batch=global_batch,
                                      shard=InputShard.of_rows(r, global_batch), **kwargs)
              for r in rows]
    while True:
        batch = {}
        for r, part in zip(rows, (next(it) for it in shards)):
            for k, v in part.items():
                batch.setdefault(k, np.zeros((global_batch,) + v.shape[1:], v.dtype))[r] = v
        yield batch


@pytest.mark.slow
def test_two_processes_per_host_input_equal_single_process_reference(per_host_run, short_docs):
    """The per-host run of two processes trains on exactly the global batches that its two
    input shards give when built in one process and placed row by row (`_hosts_feed`): the
    same losses from the train step on one device as from the run on 2 x 2 devices."""
    cfg = load_config(None, [*MH, *short_docs, *PER_HOST])
    d, t = cfg.data, cfg.train
    tokenizer = ByteTokenizer()  # the runs' default tokenizer
    cfg = config_lib.replace(cfg, **{"model.vocab_size": tokenizer.vocab_size})
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    asm = assemble(cfg, mesh, tokenizer)
    state, _ = init_state(asm.model, asm.optimizer, seed=t.seed, seq_len=d.seq_len, mesh=mesh)
    texts = load_run_data(d, "clm", None).corpus.train
    stream = dict(seq_len=d.seq_len, global_batch=t.batch_size, seed=d.seed,
                  shuffle_window=d.shuffle_window)
    feed = _hosts_feed(texts, tokenizer, hosts=2, **stream)
    reference = {}
    for step in range(1, t.steps + 1):
        batch = next(feed)
        if step == 1:  # not the one stream a single host reads (data.input=global)
            one_stream = next(pipeline.train_iterator(texts, tokenizer, **stream))
            assert not np.array_equal(batch["inputs"], one_stream["inputs"])
        state, metrics = asm.train_step(state, sharding.put_batch(mesh, batch, t.batch_size))
        reference[step] = float(metrics["loss"])
    per_host = per_host_run[1]
    assert per_host == pytest.approx({s: reference[s] for s in per_host}, abs=1e-5)
