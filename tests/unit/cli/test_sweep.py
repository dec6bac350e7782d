"""The `jaxlm sweep` command: a bad spec, the dry run."""

from __future__ import annotations

from jaxlm import cli
from scaling_helpers import write_spec


def test_bad_spec_through_cli(tmp_path, capsys):
    path = write_spec(tmp_path, families={"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}},
                      tokens=[1], seedz=[1])
    assert cli.main(["sweep", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seedz" in err[0]
    assert not (tmp_path / "w").exists()


def test_dry_run_prints_the_plan(repo_root, tmp_path, capsys):
    assert cli.main(["sweep", "--config", str(repo_root / "configs/sweeps/cpu_demo.yaml"),
                     "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "transformer-L" in out and "lstm-L" in out and "-C1.25e11" in out
    assert out.count("-C1.5e12-holdout") == 2  # one held-out member per family
    assert "families.lstm.tokens_per_param" in out  # the LSTM's own window leaves sizes out
    assert "members;" in out and not (tmp_path / "w").exists()
