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

from helpers import _ckpt_steps, _snapshot, bits, damage, restore_state, run


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


@pytest.mark.parametrize("how", ["truncate", "delete", "garbage", "garbage_json", "position"])
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


def test_edited_data_position_falls_back_exactly(six_steps, tmp_path, capsys):
    """One number of the saved data-iterator position edited (the file still valid JSON): the
    fingerprint written with the checkpoint catches it, as for damaged parameters, and the run
    resumes from the previous checkpoint to the same parameters (issue 21.4)."""
    src, ref = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    damage(workdir / "checkpoints" / "6", "position")
    result = run(workdir, "train.steps=6")
    err = capsys.readouterr().err
    bad = str((workdir / "checkpoints" / "6").absolute())
    assert f"checkpoint {bad} is damaged (its data-iterator position" in err, err
    assert bits(result.params) == bits(ref.params)


# ---------------------------------------------------------------------------------------------
# readers of a run directory fall back as training does (issue 21.2)


def _generate(workdir, tmp_path):
    from jaxlm.generate import TextGenerator

    return TextGenerator.from_workdir(str(workdir)).params


def _eval(workdir, tmp_path):
    from jaxlm.eval_run import evaluate_run

    assert evaluate_run(workdir, max_batches=1)["step"] == 3
    return None


def _convert(workdir, tmp_path):
    from jaxlm.interop.convert import run_to_hf

    assert run_to_hf(workdir, tmp_path / "hf").step == 3
    return None


def _init_from(workdir, tmp_path):
    from jaxlm.init_from import load_init_params

    cfg = from_dict(yaml.safe_load((workdir / "config.yaml").read_text()))
    return load_init_params(str(workdir), cfg.model)


READERS = {"generate": _generate, "eval": _eval, "convert": _convert, "init_from": _init_from}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_skip_a_damaged_newest_checkpoint_and_stray_files(reader, six_steps, tmp_path,
                                                                  capsys):
    """A damaged newest checkpoint and a stray file named with digits in checkpoints/: every
    reader uses step 3 (with one warning naming the damaged one), as training would, and
    moves nothing (it only reads). The damage is the state's lost manifest, which no part of the
    params survives: a half-truncated data file may hold whole params (readers then rightly use
    them; newer Orbax versions order the leaves in the file differently from run to run)."""
    src, _ = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    damage(workdir / "checkpoints" / "6", "delete")
    (workdir / "checkpoints" / "123").write_text("not a checkpoint\n")
    want = restore_state(workdir, 3).params
    capsys.readouterr()
    params = READERS[reader](workdir, tmp_path)
    err = capsys.readouterr().err
    if params is not None:
        assert bits(params) == bits(want)
    bad = workdir.absolute() / "checkpoints" / "6"
    warned = [line for line in err.splitlines() if "damaged" in line]
    assert len(warned) == 1 and str(bad) in warned[0] and "step 3" in warned[0], err
    assert "Traceback" not in err
    assert bad.is_dir() and (workdir / "checkpoints" / "123").is_file()
    assert not (workdir / CORRUPT_DIR).exists()


def test_readers_with_no_readable_checkpoint_say_so_in_one_line(six_steps, tmp_path):
    from jaxlm.rundir import load_run

    src, _ = six_steps
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir)
    for step in (3, 6):  # (damage only in the optimizer state would not matter here)
        shutil.rmtree(workdir / "checkpoints" / str(step) / "state")
    with pytest.raises(JaxlmError) as e:
        load_run(workdir)
    msg = str(e.value)
    assert f"no checkpoint in {(workdir / 'checkpoints').absolute()} can be restored" in msg
    assert "\n" not in msg
    with pytest.raises(JaxlmError, match="cannot restore checkpoint .*6: "):
        load_run(workdir, step=6)  # asked for by step: that one, or a line saying why not
