"""Checkpoints and exact resume: a run stopped (signal, crash) and resumed is the same run, bit
for bit; what a checkpoint holds; which checkpoints are kept. In-process calls of
`jaxlm.train.loop.train` (no interpreter start-up per run).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

import jax
import pytest
import yaml

from jaxlm.train import metrics as metrics_lib
from jaxlm.checkpoint import Checkpointer

from helpers import _ckpt_steps, _records, _step_records, bits, losses, restore_state, run


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
    assert (ref_dir / "jaxlm_tokenizer.json").is_file()
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


def test_sigterm_during_the_final_eval_stops_as_a_preemption(tmp_path, monkeypatch):
    """The last checkpoint is committed before the final eval and sampling: a signal there stops
    at once with the preemption line and exit status (not a bare 143), and re-running the
    command evaluates."""
    import signal as signal_lib
    import time

    from jaxlm.config import load_config
    from jaxlm.train import loop as loop_mod
    from helpers import TINY

    real = loop_mod.evaluate

    def evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal_lib.SIGTERM)
        time.sleep(10)  # the handler raises here
        return real(*args, **kwargs)

    def unhandled(signum, frame):  # what the final eval met before: the default, exit 143
        raise AssertionError("SIGTERM during the final eval reached the default handler")

    cfg = load_config(None, [*TINY, "train.steps=3", "train.eval_every=0"])
    workdir = tmp_path / "run"
    previous = signal_lib.signal(signal_lib.SIGTERM, unhandled)
    try:
        with monkeypatch.context() as mp:
            mp.setattr(loop_mod, "evaluate", evaluate)
            result = loop_mod.train(cfg, workdir, quiet=True)
        assert signal_lib.getsignal(signal_lib.SIGTERM) is unhandled  # handlers put back
    finally:
        signal_lib.signal(signal_lib.SIGTERM, previous)
    assert result.preempted and result.final_step == 3
    last = _records(workdir)[-1]
    assert last["event"] == "preempted" and last["signal"] == "SIGTERM" and last["step"] == 3
    again = loop_mod.train(cfg, workdir, quiet=True)
    assert not again.preempted and _records(workdir)[-1]["event"] == "final"
