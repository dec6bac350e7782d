"""Sweeps on Ray (one local cluster for the module, 2 CPUs) and through submitit's local
executor: the same runs.csv as the local launcher; a worker killed (SIGKILL) or stopped
(SIGTERM) mid-member is started again and resumes from its checkpoint to the same final
loss as an uninterrupted member; a finished sweep restarted does no work."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest

from jaxlm import cli
from jaxlm.scaling import results, sweep
from scaling_helpers import SWEEP_TINY, tiny_spec

# two members (a transformer, an LSTM) of 48 steps, a checkpoint every 4: long enough to be
# stopped part-way, short enough for the suite
SPEC = {"base_overrides": {**SWEEP_TINY, "train.checkpoint_every": 4, "train.log_every": 4},
        "tokens": [2 * 16 * 48]}
TIMING = ("wall_time",)  # the one column that differs between two runs of a member


def _table(workdir):
    return {n: {k: v for k, v in r.items() if k not in TIMING}
            for n, r in sweep.read_rows(workdir / "runs.csv").items()}


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    return tiny_spec(tmp_path_factory.mktemp("spec"), **SPEC)


@pytest.fixture(scope="module")
def reference(spec_path, tmp_path_factory):
    """The local launcher's runs.csv (in this process)."""
    work = tmp_path_factory.mktemp("local")
    spec = sweep.load_spec(spec_path)
    out = sweep.run_sweep(spec, sweep.expand(spec), work, show=False)
    assert len(out.ran) == 2 and not out.failed
    return _table(work)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def test_ray_runs_the_sweep_like_the_local_launcher(ray_cluster, spec_path, reference,
                                                     tmp_path, capsys):
    work = tmp_path / "ray"
    argv = ["sweep", "--config", str(spec_path), "--workdir", str(work), "--launcher", "ray"]
    assert cli.main(argv) == 0
    assert _table(work) == reference
    assert {r["status"] for r in reference.values()} == {"ok"}
    metrics = {n: (work / "runs" / n / "metrics.jsonl").read_text() for n in reference}
    # restarting the finished sweep does no work
    assert cli.main(argv) == 0
    assert "0 ran, 2 already done, 0 failed" in capsys.readouterr().err
    assert {n: (work / "runs" / n / "metrics.jsonl").read_text() for n in reference} == metrics


def _stop_at_first_checkpoint(work, how: dict[str, int], seen: dict[str, int]):
    """Sends `how[name]` to the process training member `name` once its step-4 checkpoint
    is committed (the pid from the run directory's lock file)."""
    deadline = time.monotonic() + 240
    while len(seen) < len(how) and time.monotonic() < deadline:
        for name, sig in how.items():
            run = work / "runs" / name
            if name not in seen and (run / "checkpoints" / "4").is_dir():
                pid = int((run / ".lock").read_text().split()[1])
                os.kill(pid, sig)
                seen[name] = pid
        time.sleep(0.02)


def test_a_killed_or_stopped_worker_is_retried_and_resumes(ray_cluster, spec_path, reference,
                                                            tmp_path):
    from jaxlm.scaling.sweep.ray_launcher import RayLauncher

    work = tmp_path / "faults"
    spec = sweep.load_spec(spec_path)
    members = sweep.expand(spec)
    how = {members[0].name: signal.SIGKILL, members[1].name: signal.SIGTERM}
    seen: dict[str, int] = {}
    watcher = threading.Thread(target=_stop_at_first_checkpoint, args=(work, how, seen))
    watcher.start()
    try:
        out = sweep.run_sweep(spec, members, work, launcher=RayLauncher(spec.launcher),
                              show=False)
    finally:
        watcher.join()
    assert set(seen) == set(how)
    assert sorted(out.retried) == sorted(how) and not out.failed and out.preempted is None
    assert _table(work) == reference  # the same final losses as uninterrupted members
    for name in how:
        assert json.loads(results.record_path(work, name).read_text())["attempts"] == 2
        events = [json.loads(line) for line in (work / "runs" / name / "metrics.jsonl")
                  .read_text().splitlines() if '"event"' in line]
        starts = [e["start_step"] for e in events if e["event"] == "start"]
        assert starts[0] == 0 and starts[-1] >= 4, starts  # resumed from a checkpoint
        if how[name] == signal.SIGTERM:  # stopped cleanly: checkpointed, then reported
            assert "preempted" in [e["event"] for e in events]


def test_submitit_local_executor_runs_the_sweep(spec_path, reference, tmp_path):
    work = tmp_path / "slurm"
    spec = tiny_spec(tmp_path, **SPEC, launcher={
        "kind": "slurm", "max_concurrent": 2, "slurm": {"executor": "local", "time_min": 10}})
    assert cli.main(["sweep", "--config", str(spec), "--workdir", str(work)]) == 0
    assert _table(work) == reference
    assert any((work / "submitit").iterdir())  # submitit's job files
