"""The `jaxlm sweep` command: a bad spec, the dry run."""

from __future__ import annotations

import yaml

from jaxlm import cli

TINY = {  # a few steps of a tiny model per member
    "data.seq_len": 16, "model.max_seq_len": 16, "train.log_every": 2, "train.eval_every": 0,
    "train.final_eval_batches": 1, "train.checkpoint_every": 0, "train.samples": 0,
    "data.shuffle_window": 0,
}


def write_spec(tmp_path, name="spec.yaml", **spec):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_spec(tmp_path, **changes):
    spec = {"base_overrides": dict(TINY),
            "families": {"transformer": {"head_dim": 8, "sizes": [{"n_layers": 1, "d_model": 16}]},
                         "lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}},
            "tokens": [256], "batch_size": {"value": 2}, "warmup_fraction": 0.2}
    spec.update(changes)
    return write_spec(tmp_path, **spec)


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
    assert "transformer-L" in out and "lstm-L" in out and "-C1e11" in out
    assert "members;" in out and not (tmp_path / "w").exists()
