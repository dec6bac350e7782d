"""jaxlm.rundir: config.yaml and the tokenizer written atomically and only when changed, a
damaged config.yaml recovered from the checkpoint (issue 21.3), and the per-key policy for a
config changed on resume: refused, or recorded in config_history.jsonl (issue 21.5). On copies
of tests/fixtures/run_v0 (TINY, checkpoint at step 3); nothing here trains."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.config import load_config
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError

from helpers import FIXTURES, TINY


def _cfg(*overrides: str, vocab: bool = True):
    cfg = load_config(None, [*TINY, "train.steps=3", *overrides])
    return config_lib.replace(cfg, **{"model.vocab_size": 259}) if vocab else cfg


@pytest.fixture
def old_run(tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_v0", workdir)
    return workdir


def _stamp(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_write_config_writes_only_what_changed(tmp_path):
    rundir.write_config(tmp_path, _cfg(), ByteTokenizer())
    files = [tmp_path / rundir.CONFIG_FILE, tmp_path / rundir.TOKENIZER_JSON]
    before = [_stamp(f) for f in files]
    time.sleep(0.05)
    rundir.write_config(tmp_path, _cfg(), ByteTokenizer())
    assert [_stamp(f) for f in files] == before  # not rewritten: same content
    rundir.write_config(tmp_path, _cfg("optim.lr=0.001"), ByteTokenizer())
    assert yaml.safe_load(files[0].read_text())["optim"]["lr"] == 0.001
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)


def test_write_config_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way (here: at the rename) leaves the old config.yaml whole."""
    rundir.write_config(tmp_path, _cfg(), ByteTokenizer())
    path = tmp_path / rundir.CONFIG_FILE
    old = path.read_bytes()

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "replace", no_space)
    with pytest.raises(JaxlmError, match="No space left on device"):
        rundir.write_config(tmp_path, _cfg("optim.lr=0.001"), ByteTokenizer())
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.CONFIG_FILE,
                                                          rundir.TOKENIZER_JSON]


def _damage_config(workdir, how):
    path = workdir / rundir.CONFIG_FILE
    if how == "empty":
        path.write_text("")
    elif how == "truncated":  # cut inside a line: still YAML, but not the whole config
        text = path.read_text()
        path.write_text(text[: len(text) // 2 + 3])
    elif how == "cut_at_line":  # valid YAML, a mapping, but the tail is missing
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 2]))
    elif how == "garbage":
        path.write_bytes(b"model: [unclosed\n\xff\xfe")
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["empty", "truncated", "cut_at_line", "garbage", "missing"])
def test_damaged_config_is_recovered_from_the_checkpoint(old_run, how):
    """Resuming (and reading) a run whose config.yaml is damaged uses the config saved with
    its checkpoint, says so in one line, and does not refuse the resume."""
    want = rundir.read_config(old_run)
    _damage_config(old_run, how)
    said: list[str] = []
    assert rundir.check_resumable(_cfg(vocab=False), old_run, None, log=said.append)
    assert len(said) == 1 and str(old_run / rundir.CONFIG_FILE) in said[0], said
    assert "using the config saved with checkpoint 3" in said[0]
    assert rundir.read_config(old_run) == want


def test_damaged_config_kept_aside_and_rewritten(old_run):
    _damage_config(old_run, "truncated")
    cut = (old_run / rundir.CONFIG_FILE).read_bytes()
    rundir.write_config(old_run, _cfg(), ByteTokenizer(), resumed_step=3, log=lambda m: None)
    assert (old_run / "config.yaml.damaged").read_bytes() == cut  # nothing written is lost
    assert rundir.read_config(old_run) == _cfg()


def test_damaged_config_without_a_saved_one_is_one_line(old_run):
    _damage_config(old_run, "empty")
    shutil.rmtree(old_run / "checkpoints" / "3" / "config")
    with pytest.raises(JaxlmError) as e:
        rundir.check_resumable(_cfg(vocab=False), old_run, None, log=lambda m: None)
    assert "no checkpoint in" in str(e.value) and "config.yaml" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, old, new", [
    ("data.corpus={other}", "stdlib", "{other}"),
    ("train.batch_size=8", "4", "8"),
    ("data.seed=1", "0", "1"),
    ("data.shuffle_window=0", "1024", "0"),
    ("optim.name=sgd", "adamw", "sgd"),
    ("optim.grad_clip=0", "1.0", "0"),
    ("model.n_layers=2", "1", "2"),
])
def test_resume_refuses_what_changes_the_checkpoints_meaning(old_run, tmp_path, override, old,
                                                             new):
    other = tmp_path / "other.txt"
    other.write_text("other text\n" * 100)
    override, new = override.format(other=other), new.format(other=other)
    key = override.split("=")[0]
    with pytest.raises(JaxlmError) as e:
        rundir.check_resumable(_cfg(override, vocab=False), old_run, None)
    msg = str(e.value)
    assert f"{key}: {old} -> {new}" in msg and str(old_run) in msg, msg
    assert f"resume with {key}={old}" in msg and "\n" not in msg


def test_resume_allows_and_records_other_changes(old_run, capsys):
    """optim.lr and train.steps may change: config.yaml says what runs now, and
    config_history.jsonl what the steps before the checkpoint used."""
    cfg = _cfg("optim.lr=0.001", "train.steps=5", "mesh.data=1")
    assert rundir.check_resumable(cfg, old_run, None)
    said: list[str] = []
    rundir.write_config(old_run, cfg, ByteTokenizer(), resumed_step=3, log=said.append)
    history = [json.loads(x) for x in (old_run / rundir.HISTORY_FILE).read_text().splitlines()]
    changes = {r["key"]: (r["old"], r["new"]) for r in history}
    assert changes == {"optim.lr": (0.002, 0.001), "train.steps": (3, 5), "mesh.data": (-1, 1)}
    assert all(r["step"] == 3 and r["time"] for r in history)
    assert len(said) == 3 and any("optim.lr changed from 0.002 to 0.001 at step 3" in m
                                  for m in said), said
    assert rundir.read_config(old_run) == cfg
    rundir.write_config(old_run, cfg, ByteTokenizer(), resumed_step=3, log=said.append)
    assert len((old_run / rundir.HISTORY_FILE).read_text().splitlines()) == 3  # no change now
