"""A tiny sweep through `jaxlm sweep`: runs.csv, resume, the fit on its results."""

from __future__ import annotations

import json
import math
import shutil

from jaxlm import cli
from jaxlm.scaling import sweep
from scaling_helpers import SWEEP_TINY as TINY, rows, tiny_spec


def test_tiny_sweep_through_the_cli(tmp_path, capsys):
    """Real runs: two members finish, two fail (invalid config; a runtime error), re-running
    redoes nothing, and a member with a checkpoint but no row resumes from it."""
    spec_path = tiny_spec(
        tmp_path, base_overrides={**TINY, "train.checkpoint_every": 4},
        families={"transformer": {"head_dim": 8, "sizes": [
            {"n_layers": 1, "d_model": 16},
            {"n_layers": 1, "d_model": 16, "tag": "badshape", "overrides": {"model.n_heads": 3}},
        ]}, "lstm": {"sizes": [
            {"n_layers": 1, "d_model": 8},
            {"n_layers": 1, "d_model": 8, "tag": "badvocab", "overrides": {"model.vocab_size": 10}},
        ]}})
    work = tmp_path / "sweep"
    argv = ["sweep", "--config", str(spec_path), "--workdir", str(work)]
    assert cli.main(argv) == 1  # some member failed
    got = {r["name"]: r for r in rows(work / "runs.csv")}
    assert list(next(iter(got.values()))) == list(sweep.COLUMNS)
    good = ["transformer-L1-d16-D256", "lstm-L1-d8-D256"]
    assert {n: r["status"] for n, r in got.items()} == {
        good[0]: "ok", "transformer-L1-d16-D256-badshape": "failed",
        good[1]: "ok", "lstm-L1-d8-D256-badvocab": "failed"}
    assert "not divisible by model.n_heads=3" in got["transformer-L1-d16-D256-badshape"]["error"]
    assert "model.vocab_size=10 is smaller" in got["lstm-L1-d8-D256-badvocab"]["error"]
    for name in good:
        r = got[name]
        assert int(r["steps"]) == 8 and int(r["tokens"]) == 8 * 2 * 16
        assert int(r["params"]) < int(r["params_total"])
        assert float(r["flops"]) >= 6 * int(r["params"]) * int(r["tokens"])
        for key in ("train_loss", "loss", "eval_bpb", "wall_time", "lr"):
            assert math.isfinite(float(r[key])), key
        assert r["family"] == name.split("-")[0] and r["error"] == ""
    metrics = {n: (work / "runs" / n / "metrics.jsonl").read_text() for n in good}

    # re-running redoes nothing (not even the failed members)
    assert cli.main(argv) == 0
    assert len(rows(work / "runs.csv")) == 4
    assert {n: (work / "runs" / n / "metrics.jsonl").read_text() for n in good} == metrics

    # an interrupted member: a checkpoint at step 4, no final checkpoint, no record -> resumes
    sweep.results.record_path(work, good[1]).unlink()
    lines = (work / "runs.csv").read_text().splitlines()
    (work / "runs.csv").write_text("\n".join(l for l in lines if not l.startswith(good[1] + ","))
                                   + "\n")
    shutil.rmtree(work / "runs" / good[1] / "checkpoints" / "8")
    assert cli.main(argv) == 0
    assert sweep.read_rows(work / "runs.csv")[good[1]]["status"] == "ok"
    starts = [json.loads(l) for l in (work / "runs" / good[1] / "metrics.jsonl").read_text()
              .splitlines() if '"event": "start"' in l]
    assert starts[-1]["start_step"] == 4
    assert (work / "runs" / good[0] / "metrics.jsonl").read_text() == metrics[good[0]]
    assert "1 ran, 3 already done, 0 failed" in capsys.readouterr().err
