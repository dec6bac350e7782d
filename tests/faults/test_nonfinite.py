"""Faults: non-finite losses and gradients, skipped (counted, never checkpointed, the count
resumed) or halting the run."""

from __future__ import annotations

import math
import shutil

import jax
import numpy as np
import pytest

from jaxlm.errors import NonFiniteError

from helpers import TINY, _ckpt_steps, _main, _records, _step_records, bits, restore_state, \
    run

NAN = TINY + ["train.steps=6", "train.log_every=1", "train.checkpoint_every=1",
              "train.keep_checkpoints=10", "train.samples=0", "train.final_eval_batches=1"]


# ---------------------------------------------------------------------------------------------
# non-finite loss / gradients


@pytest.fixture(scope="module")
def nan_skip_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nan") / "run"
    result = run(workdir, "train.debug_nan_steps=[2,5]", base=NAN)
    return workdir, result


def test_nonfinite_steps_are_skipped_and_counted(nan_skip_run, capsys):
    workdir, result = nan_skip_run
    assert result.final_step == 6 and result.skipped_steps == 2
    steps = {r["step"]: r for r in _step_records(workdir)}
    assert [steps[s]["skipped_steps"] for s in range(1, 7)] == [0, 1, 1, 1, 2, 2]
    assert steps[2]["loss"] is None and steps[5]["loss"] is None  # NaN is written as null
    assert all(math.isfinite(steps[s]["loss"]) for s in (1, 3, 4, 6))
    final = [r for r in _records(workdir) if r.get("event") == "final"][0]
    assert final["skipped_steps"] == 2 and math.isfinite(final["eval_loss"])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.params))


def test_nonfinite_step_never_reaches_a_checkpoint(nan_skip_run):
    """The checkpoint after a poisoned step holds the state from before it: same params and
    optimizer state, only the step (hence data, schedule, dropout key) moved on."""
    workdir, _ = nan_skip_run
    assert _ckpt_steps(workdir) == [1, 2, 3, 4, 5, 6]
    for before, poisoned in ((1, 2), (4, 5)):
        a, b = restore_state(workdir, before), restore_state(workdir, poisoned)
        assert bits(a.params) == bits(b.params)
        assert bits(a.opt_state) == bits(b.opt_state)
        assert int(b.step) == poisoned
    for step in _ckpt_steps(workdir):
        state = restore_state(workdir, step)
        assert all(np.isfinite(np.asarray(x)).all()
                   for x in jax.tree.leaves((state.params, state.opt_state)))


def test_skipped_count_survives_resume(nan_skip_run, tmp_path):
    """The count lives in the checkpoint: a run resumed after step 3 still reports 2 at the end."""
    src, _ = nan_skip_run
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    for step in (4, 5, 6):
        shutil.rmtree(workdir / "checkpoints" / str(step))
    result = run(workdir, "train.debug_nan_steps=[2,5]", base=NAN)
    assert result.skipped_steps == 2
    assert [r["skipped_steps"] for r in _step_records(workdir)] == [0, 1, 1, 1, 2, 2]


def test_nonfinite_halt(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(NonFiniteError) as e:
        run(workdir, "train.debug_nan_steps=[4]", "train.nonfinite=halt",
            "train.checkpoint_every=2", base=NAN)
    msg = str(e.value)
    assert "non-finite loss or gradient norm at step 4" in msg and "train.nonfinite=halt" in msg
    assert str((workdir / "checkpoints" / "2").absolute()) in msg  # where to go back to
    assert _ckpt_steps(workdir) == [2]  # nothing at or after the bad step
    assert [r["step"] for r in _records(workdir) if r.get("event") == "halted"] == [4]


def test_consecutive_skips_stop_the_run(tmp_path, capsys):
    """train.nonfinite=skip had no limit (28 of 30 steps skipped ended with exit 0 and a NaN
    eval): after train.nonfinite_patience consecutive skips the run stops, exit 3, one line,
    and the checkpoints hold the weights from before the streak."""
    workdir = tmp_path / "run"
    code, out, err = _main(capsys, "--workdir", str(workdir), *NAN,
                           "train.debug_nan_steps=[3,4,5]", "train.nonfinite_patience=2")
    assert code == 3, err[-3000:]
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("jaxlm: error:")]
    assert len(ours) == 1, err[-3000:]
    assert "2 consecutive steps (3-4)" in ours[0] and "train.nonfinite_patience=2" in ours[0]
    assert str((workdir / "checkpoints" / "3").absolute()) in ours[0]
    assert _ckpt_steps(workdir) == [1, 2, 3]  # nothing at or after the step that stopped it
    assert bits(restore_state(workdir, 3).params) == bits(restore_state(workdir, 2).params)
    assert [r["step"] for r in _records(workdir) if r.get("event") == "halted"] == [4]


def test_nonfinite_patience_zero_never_stops(tmp_path):
    result = run(tmp_path / "run", "train.debug_nan_steps=[2,3,4,5,6]",
                 "train.nonfinite_patience=0", "train.checkpoint_every=0", base=NAN)
    assert result.final_step == 6 and result.skipped_steps == 5
