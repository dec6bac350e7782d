"""Checkpoints and exact resume: a run stopped (signal, crash, SIGKILL) and resumed is the same
run, bit for bit; damaged checkpoints are reported, skipped and kept.

Most runs are in-process calls of `jaxlm.train.loop.train` (no interpreter start-up per run);
the signal and SIGKILL tests run `python train.py` as a user does.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import threading
import time

import jax
import numpy as np
import pytest
import yaml

from jaxlm import sharding
from jaxlm.config import from_dict, load_config
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model
from jaxlm.train import metrics as metrics_lib
from jaxlm.checkpoint import CORRUPT_DIR, Checkpointer
from jaxlm.train.loop import train
from jaxlm.train.optim import build_optimizer
from jaxlm.train.preemption import EXIT_PREEMPTED, StopSignals
from jaxlm.train.state import state_shardings

from conftest import REPO_ROOT
from test_train_e2e import TINY, _ckpt_steps, _cmd, _env, _fail_msg, _records, _snapshot, \
    _step_records

# every step logged; dropout on, so the RNG must resume too; checkpoints at 3 and 6
EXACT = TINY + ["train.steps=8", "train.log_every=1", "train.checkpoint_every=3",
                "model.dropout=0.1", "train.samples=0", "train.final_eval_batches=1"]


def run(workdir: pathlib.Path, *overrides: str, base=EXACT):
    return train(load_config(None, [*base, *overrides]), workdir, quiet=True)


def losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> loss of every step record; fails on a duplicated step."""
    steps = [r["step"] for r in _step_records(workdir)]
    assert len(steps) == len(set(steps)), f"duplicated steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in _step_records(workdir)}


def bits(tree) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def restore_state(workdir: pathlib.Path, step: int):
    """The whole train state of checkpoint `step` of a run directory (verified)."""
    cfg = from_dict(yaml.safe_load((workdir / "config.yaml").read_text()))
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optim, cfg.train.steps)
    abstract, shardings = state_shardings(model, optimizer, cfg.data.seq_len,
                                          sharding.make_mesh(cfg.mesh))
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        return ckpt.restore(step, abstract, shardings)
    finally:
        ckpt.close()


@contextlib.contextmanager
def after_logging(step: int, action):
    """Calls `action()` right after the loop writes the metrics record of `step`."""
    real = metrics_lib.MetricsWriter.write

    def write(self, record):
        real(self, record)
        if record.get("step") == step and "loss" in record:
            action()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics_lib.MetricsWriter, "write", write)
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: the EXACT run, never interrupted."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    result = run(workdir)
    assert result.final_step == 8 and not result.preempted
    return workdir, result


# ---------------------------------------------------------------------------------------------
# exact resume


def test_signal_stops_checkpoints_and_resumes_bitwise(straight, tmp_path, capsys):
    """SIGINT (as from Ctrl-C) mid-run: the step reached is checkpointed, the run stops cleanly,
    handlers are put back; the same call again finishes the run with the very same losses and
    parameters as the run that was never interrupted."""
    ref_dir, ref = straight
    workdir = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # step 4's record is written once step 5 is dispatched: the loop stops after step 5
    with after_logging(4, lambda: os.kill(os.getpid(), signal.SIGINT)):
        first = run(workdir)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert first.preempted and first.final_step == 5
    err = capsys.readouterr().err
    assert "stopped by SIGINT at step 5 of 8" in err, err
    assert "run the same command again" in err, err
    assert _ckpt_steps(workdir) == [3, 5]  # 5 is not a checkpoint_every step: the stop saved it
    assert [r for r in _records(workdir) if r.get("event") == "preempted"][0]["step"] == 5

    second = run(workdir)
    assert not second.preempted and second.final_step == 8
    assert [r["start_step"] for r in _records(workdir) if r.get("event") == "start"] == [0, 5]
    got, want = losses(workdir), losses(ref_dir)
    assert list(got) == list(range(1, 9))  # every step once
    assert got == want  # bitwise: JSON round-trips float32 exactly
    assert bits(second.params) == bits(ref.params)
    assert second.eval == ref.eval


def test_crash_resumes_from_last_checkpoint_bitwise(straight, tmp_path):
    """A run that dies after logging step 5 (its newest checkpoint: 3) resumes from step 3: the
    records of steps 4 and 5 are dropped and redone, none twice, and the result is exact."""
    ref_dir, ref = straight
    workdir = tmp_path / "run"

    def crash():
        raise RuntimeError("simulated crash")

    with after_logging(5, crash), pytest.raises(RuntimeError, match="simulated crash"):
        run(workdir)
    assert _ckpt_steps(workdir) == [3]
    assert max(losses(workdir)) >= 5
    result = run(workdir)
    starts = [r["start_step"] for r in _records(workdir) if r.get("event") == "start"]
    assert starts == [0, 3]
    got = losses(workdir)
    assert list(got) == list(range(1, 9))
    assert got == losses(ref_dir)
    assert bits(result.params) == bits(ref.params)


def test_checkpoint_holds_everything(straight):
    """Each checkpoint: state (params, optimizer state, step, RNG), the data position, the
    resolved config, a fingerprint; the tokenizer lies beside them."""
    ref_dir, ref = straight
    step_dir = ref_dir / "checkpoints" / "8"
    for item in ("state", "data", "meta", "config"):
        assert (step_dir / item).is_dir(), item
    state = restore_state(ref_dir, 8)
    assert int(state.step) == 8
    assert bits(state.params) == bits(ref.params)
    assert jax.tree.leaves(state.opt_state) and state.rng.shape == (2,)
    assert (ref_dir / "tokenizer.json").is_file()
    saved = yaml.safe_load((ref_dir / "config.yaml").read_text())
    in_ckpt = json.loads((step_dir / "config" / "metadata").read_text())
    assert in_ckpt["model"] == saved["model"] and in_ckpt["train"]["steps"] == 8


def test_keeps_last_k_plus_best(tmp_path):
    """keep_checkpoints=1 keeps the newest checkpoint and the best one by eval loss."""
    workdir = tmp_path / "run"
    # evals and checkpoints at 2, 4 and 6: the one with the lowest eval loss survives with 7
    run(workdir, "train.steps=7", "train.eval_every=2", "train.checkpoint_every=2",
        "train.keep_checkpoints=1", "model.dropout=0.0")
    evals = {r["step"]: r["eval_loss"] for r in _step_records(workdir) if "eval_loss" in r}
    assert sorted(evals) == [2, 4, 6]
    best = min(evals, key=evals.get)
    assert _ckpt_steps(workdir) == sorted({best, 7})
    ckpt = Checkpointer(workdir / "checkpoints", keep=1)
    try:
        assert ckpt.best_step() == best
    finally:
        ckpt.close()


# ---------------------------------------------------------------------------------------------
# damaged checkpoints


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """A finished 6-step run with checkpoints 3 and 6, its final params, a pristine copy."""
    workdir = tmp_path_factory.mktemp("six") / "run"
    result = run(workdir, "train.steps=6")
    assert _ckpt_steps(workdir) == [3, 6]
    return workdir, result


def _biggest_file(step_dir: pathlib.Path) -> pathlib.Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def damage(step_dir: pathlib.Path, how: str) -> pathlib.Path:
    """Damages a checkpoint as a crash, a full disk or bit rot would; returns the file hit."""
    if how == "truncate":
        f = _biggest_file(step_dir)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "delete":
        f = step_dir / "state" / "manifest.ocdbt"
        f.unlink()
    elif how == "garbage":  # restores without any error from Orbax: only the fingerprint sees it
        f = _biggest_file(step_dir)
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
        f.write_bytes(bytes(data))
    elif how == "garbage_json":  # the data-iterator position
        f = step_dir / "data" / "metadata"
        f.write_bytes(b"\x00{not json" + f.read_bytes()[10:])
    else:
        raise ValueError(how)
    return f


def test_damaged_latest_checkpoint_falls_back_exactly(six_steps, tmp_path, capsys):
    """Training past a truncated newest checkpoint: reported with its path, moved aside (kept,
    byte for byte), and the run resumes from the previous one to the same parameters."""
    src, ref = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    damage(workdir / "checkpoints" / "6", "truncate")
    damaged = _snapshot(workdir / "checkpoints" / "6")
    result = run(workdir, "train.steps=6")
    err = capsys.readouterr().err
    bad = str((workdir / "checkpoints" / "6").absolute())
    assert f"checkpoint {bad} is damaged" in err, err
    assert "skipped in favour of step 3" in err
    moved = workdir / CORRUPT_DIR / "6"
    assert str(moved) in err
    assert _snapshot(moved) == damaged  # kept as it was, not deleted or overwritten
    assert _ckpt_steps(workdir) == [3, 6]
    assert bits(result.params) == bits(ref.params)  # resumed from 3, exactly


class _Position:
    """Stands in for the data iterator: takes the restored position."""

    state = None

    def set_state(self, state):
        self.state = state


@pytest.mark.parametrize("how", ["truncate", "delete", "garbage", "garbage_json"])
def test_damaged_checkpoint_detected(six_steps, tmp_path, how):
    """Each kind of damage is caught at restore time (not by a crash later), the newest whole
    checkpoint is chosen instead, and the damaged one is reported by path and kept."""
    src, _ = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    hit = damage(workdir / "checkpoints" / "6", how)
    cfg = from_dict(yaml.safe_load((workdir / "config.yaml").read_text()))
    abstract, shardings = state_shardings(build_model(cfg.model),
                                          build_optimizer(cfg.optim, cfg.train.steps),
                                          cfg.data.seq_len, sharding.make_mesh(cfg.mesh))
    messages, position = [], _Position()
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        with pytest.raises(JaxlmError, match="cannot restore checkpoint"):
            ckpt.restore(6, abstract, shardings, position)
        restored = ckpt.restore_latest(abstract, shardings, position, log=messages.append)
    finally:
        ckpt.close()
    assert restored.step == 3 and int(restored.state.step) == 3
    assert position.state is not None  # the data position of step 3, not of the damaged 6
    assert any(str(workdir.absolute() / "checkpoints" / "6") in m and "damaged" in m
               for m in messages), messages
    moved = workdir / CORRUPT_DIR / "6"
    assert moved.is_dir() and not (workdir / "checkpoints" / "6").exists()
    if hit.exists() or how != "delete":
        assert (moved / hit.relative_to(workdir / "checkpoints" / "6")).exists()


def test_all_checkpoints_damaged_is_an_error_and_changes_nothing(six_steps, tmp_path):
    src, _ = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    damage(workdir / "checkpoints" / "6", "garbage")
    damage(workdir / "checkpoints" / "3", "delete")
    before = _snapshot(workdir)
    with pytest.raises(JaxlmError) as e:
        run(workdir, "train.steps=6")
    msg = str(e.value)
    assert "no checkpoint in" in msg and "can be restored" in msg
    for step in (3, 6):
        assert str(workdir.absolute() / "checkpoints" / str(step)) in msg
    assert "\n" not in msg
    assert _snapshot(workdir) == before  # nothing deleted, moved or rewritten
    assert not (workdir / CORRUPT_DIR).exists()


def test_stop_signals_handlers():
    """The first signal only asks to stop; a second stops at once; previous handlers come back;
    off the main thread (where handlers cannot be set) it does nothing."""
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous
    installed = []
    worker = threading.Thread(
        target=lambda: installed.append(dict(StopSignals().__enter__()._previous)))
    worker.start()
    worker.join()
    assert installed == [{}]


# ---------------------------------------------------------------------------------------------
# real processes: SIGTERM and SIGKILL


def _wait_for(pred, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}\n{err[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(*args), cwd=REPO_ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _has_step(workdir: pathlib.Path, at_least: int, starts: int = 1) -> bool:
    """Whether the `starts`-th process on `workdir` has logged a step >= `at_least`."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return False
    n, step = 0, -1
    for line in path.read_text().splitlines():
        if line.startswith('{"event": "start"'):
            n, step = n + 1, -1
        elif m := re.match(r'\{"step": (\d+)', line):
            step = int(m.group(1))
    return n == starts and step >= at_least


def test_sigterm_checkpoints_the_step_reached_and_exits_75(tmp_path):
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), *TINY, "train.steps=1000", "train.log_every=1",
            "train.eval_every=0", "train.checkpoint_every=0"]  # checkpoint_every=0: only at the end
    proc = _popen(*args)
    _wait_for(lambda: _has_step(workdir, 2), proc, 240, "training started")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, _fail_msg(proc)
    assert "Traceback" not in err, err[-3000:]
    m = re.search(r"jaxlm: stopped by SIGTERM at step (\d+) of 1000; checkpoint (\S+) is saved",
                  err)
    assert m, err[-3000:]
    step = int(m.group(1))
    assert 2 <= step < 1000
    assert m.group(2) == str((workdir / "checkpoints" / str(step)).absolute())
    assert "run the same command again" in err
    assert _ckpt_steps(workdir) == [step]  # the step reached, committed
    assert max(r["step"] for r in _step_records(workdir)) <= step
    assert int(restore_state(workdir, step).step) == step

    proc = subprocess.run(_cmd(*args), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, _fail_msg(proc)
    assert f"from the checkpoint at step {step}" in proc.stderr
    assert "finished step 1000" in proc.stdout
    assert list(losses(workdir)) == list(range(1, 1001))


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_whole_checkpoints_and_resumes_bitwise(tmp_path):
    """SIGKILL during a checkpoint write, then at a random moment; every checkpoint left is
    whole, and the run finished by the third process equals one never interrupted."""
    base = TINY + ["train.steps=24", "train.log_every=1", "train.checkpoint_every=2",
                   "train.eval_every=6", "model.dropout=0.1", "train.samples=0",
                   "train.final_eval_batches=1", "train.keep_checkpoints=3"]
    ref = run(tmp_path / "ref", base=base)
    ref_losses = losses(tmp_path / "ref")
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), *base]
    ckpts = workdir / "checkpoints"
    rng = random.Random(0)

    def saving() -> bool:
        return ckpts.is_dir() and any(".orbax-checkpoint-tmp" in p.name for p in ckpts.iterdir())

    # 1: killed while a checkpoint is being written (with whole ones before it)
    proc = _popen(*args)
    _wait_for(lambda: _has_step(workdir, 7) and saving(), proc, 240, "a checkpoint write")
    proc.kill()
    proc.communicate()
    # 2: resumed, then killed at a random moment
    proc = _popen(*args)
    start = max(_ckpt_steps(workdir) or [0])
    target = start + rng.randint(2, 8)
    _wait_for(lambda: _has_step(workdir, target, starts=2), proc, 240, f"step {target}")
    time.sleep(rng.uniform(0.0, 0.1))
    proc.kill()
    proc.communicate()
    assert max(_ckpt_steps(workdir)) > start  # the second process got somewhere
    for step in _ckpt_steps(workdir):  # whatever is left is whole
        assert int(restore_state(workdir, step).step) == step
    # 3: runs to the end
    proc = subprocess.run(_cmd(*args), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, _fail_msg(proc)
    assert "Traceback" not in proc.stderr
    assert losses(workdir) == ref_losses
    assert bits(restore_state(workdir, 24).params) == bits(ref.params)
