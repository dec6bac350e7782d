"""Real processes: `python train.py` stopped by SIGTERM (checkpoints the step reached, exits 75)
or SIGKILL at any moment (whole checkpoints only) resumes bit for bit."""

from __future__ import annotations

import pathlib
import random
import re
import signal
import subprocess
import time

import pytest

from jaxlm.train.preemption import EXIT_PREEMPTED

from helpers import REPO_ROOT, TINY, _ckpt_steps, _cmd, _env, _fail_msg, _step_records, bits, \
    losses, restore_state, run


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
