"""A sweep with cooldown branches (spec key wsd) through `jaxlm sweep`: the trunk runs first,
its branch starts from the trunk's checkpoint in WORKDIR/runs, and equals, bitwise on CPU, the
run trained with the branch's wsd schedule from step 0 (dropout on: the RNG continues too)."""

from __future__ import annotations

import yaml

from helpers import bits, losses, restore_state
from jaxlm import cli
from jaxlm.config import from_dict
from jaxlm.train.loop import train
from scaling_helpers import SWEEP_TINY, rows, tiny_spec


def test_branch_equals_the_wsd_run_from_the_start(tmp_path):
    spec_path = tiny_spec(tmp_path, families={"transformer": {"head_dim": 8, "sizes": [
        {"n_layers": 1, "d_model": 16}]}}, tokens=[320],  # 10 steps: trunk to 8, decay 2
        base_overrides={**SWEEP_TINY, "train.log_every": 1, "model.dropout": 0.1},
        wsd={"decay_fraction": 0.2, "decay_shape": "1-sqrt"})
    work = tmp_path / "sweep"
    assert cli.main(["sweep", "--config", str(spec_path), "--workdir", str(work)]) == 0
    got = {r["name"]: r for r in rows(work / "runs.csv")}
    trunk, branch = "transformer-L1-d16-trunk", "transformer-L1-d16-D320"
    assert {n: (r["status"], r["role"], r["steps"]) for n, r in got.items()} == {
        trunk: ("ok", "trunk", "8"), branch: ("ok", "branch", "10")}
    assert list(losses(work / "runs" / branch)) == [9, 10]  # its own steps: 1..8 are the trunk's

    saved = yaml.safe_load((work / "runs" / branch / "config.yaml").read_text())
    assert saved["train"]["branch_from"] == f"{work / 'runs' / trunk}@8"
    saved["train"]["branch_from"] = None
    ref = tmp_path / "ref"
    train(from_dict(saved), ref, quiet=True)
    assert {s: losses(ref)[s] for s in (9, 10)} == losses(work / "runs" / branch)
    assert bits(restore_state(work / "runs" / branch, 10)) == bits(restore_state(ref, 10))
