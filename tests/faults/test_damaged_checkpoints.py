"""Damaged checkpoints are reported, skipped (the run falls back to the previous one, exactly)
and kept."""

from __future__ import annotations

import shutil

import pytest
import yaml

from jaxlm import sharding
from jaxlm.config import from_dict
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model
from jaxlm.checkpoint import CORRUPT_DIR, Checkpointer
from jaxlm.checkpoint.reasons import quiet_orbax
from jaxlm.train.optim import build_optimizer
from jaxlm.train.state import state_shardings

from helpers import _ckpt_steps, _snapshot, bits, damage, run


# ---------------------------------------------------------------------------------------------
# damaged checkpoints


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """A finished 6-step run with checkpoints 3 and 6, its final params, a pristine copy."""
    workdir = tmp_path_factory.mktemp("six") / "run"
    result = run(workdir, "train.steps=6")
    assert _ckpt_steps(workdir) == [3, 6]
    return workdir, result


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
    # as jaxlm's own runs do: the Orbax noise of reading damaged files kept off the terminal
    with quiet_orbax():
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
