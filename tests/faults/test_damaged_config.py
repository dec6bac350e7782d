"""A damaged config.yaml does not cost a run its checkpoints: resuming takes the config saved
with the checkpoint, says so in one line, keeps the damaged file aside and writes a whole one
(issue 21.3)."""

from __future__ import annotations

import shutil

import yaml

from jaxlm.config import load_config
from jaxlm.train.loop import train

from helpers import FIXTURES, TINY, _records


def test_resume_with_a_truncated_config(tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_v0", workdir)
    path = workdir / "config.yaml"
    whole = yaml.safe_load(path.read_text())
    cut = path.read_bytes()[: path.stat().st_size // 2 + 3]
    path.write_bytes(cut)
    result = train(load_config(None, [*TINY, "train.steps=5"]), workdir, quiet=True)
    err = capsys.readouterr().err
    assert result.final_step == 5
    assert [r["start_step"] for r in _records(workdir) if r.get("event") == "start"][-1] == 3
    assert f"{path} cannot be used" in err and "config saved with checkpoint 3" in err, err
    assert "Traceback" not in err
    assert (workdir / "config.yaml.damaged").read_bytes() == cut
    now = yaml.safe_load(path.read_text())
    whole["train"]["steps"] = 5
    # the whole config again, plus the keys added to jaxlm since run_v0 was made (at defaults)
    assert {s: {k: now[s][k] for k in keys} for s, keys in whole.items()} == whole
