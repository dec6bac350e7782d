"""A sweep with cooldown branches (spec key wsd) through `jaxlm sweep`: the trunk runs first,
its branch starts from the trunk's checkpoint in WORKDIR/runs, runs.csv marks both."""

from __future__ import annotations

import json

from jaxlm import cli
from scaling_helpers import SWEEP_TINY, rows, tiny_spec


def test_branches_run_from_their_trunk(tmp_path):
    spec_path = tiny_spec(tmp_path, families={"transformer": {"head_dim": 8, "sizes": [
        {"n_layers": 1, "d_model": 16}]}}, tokens=[320],  # 10 steps: trunk to 8, decay 2
        base_overrides={**SWEEP_TINY, "train.log_every": 1},
        wsd={"decay_fraction": 0.2, "decay_shape": "cosine"})
    work = tmp_path / "sweep"
    assert cli.main(["sweep", "--config", str(spec_path), "--workdir", str(work)]) == 0
    got = {r["name"]: r for r in rows(work / "runs.csv")}
    trunk, branch = "transformer-L1-d16-trunk", "transformer-L1-d16-D320"
    assert {n: (r["status"], r["role"], r["steps"]) for n, r in got.items()} == {
        trunk: ("ok", "trunk", "8"), branch: ("ok", "branch", "10")}
    steps = [json.loads(line) for line in (work / "runs" / branch / "metrics.jsonl")
             .read_text().splitlines()]
    trained = [r["step"] for r in steps if "event" not in r]
    assert trained == [9, 10]  # the branch's own steps only: 1..8 are the trunk's
    lrs = [r["learning_rate"] for r in steps if "event" not in r]
    assert lrs[0] < 3e-3 and lrs[1] < lrs[0]  # decaying (the trunk's lr is constant)
