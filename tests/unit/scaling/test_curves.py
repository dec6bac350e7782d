"""Approach 1 from periodic evals (jaxlm.scaling.curves, sweep_curves, `jaxlm fit DIR`): which
evals count per schedule; a synthetic law written as eval curves (one constant-lr run per size,
no training) is recovered by Approach 1, through the pure fit and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlm.cli import main
from jaxlm.config import load_config, to_yaml
from jaxlm.errors import JaxlmError
from jaxlm.scaling import curves as K
from jaxlm.scaling.approach1 import fit_approach1
from jaxlm.scaling.results import RUNS_DIR, write_record
from scaling_helpers import law3

LAW = dict(E=1.8, A=400.0, B=1500.0, al=0.34, be=0.30)  # a = be / (al + be) = 0.469
A_TRUE = LAW["be"] / (LAW["al"] + LAW["be"])
SIZES = np.geomspace(1e6, 1e9, 13)
TOKENS = np.geomspace(1e8, 1e12, 30)  # each run's evals; the last is its final eval
TPS = 64  # tokens per step: batch 4 x seq_len 16


def _evals(steps, losses, tps=TPS, **extra):
    return [{"step": int(s), "loss": 9.0, "tokens_seen": int(s) * tps, "eval_loss": float(v),
             "eval_batches": 2, **extra} for s, v in zip(steps, losses)]


def test_eval_points_per_schedule():
    steps = np.arange(10, 101, 10)  # evals every 10 of 100 steps; 100 is the final step
    recs = _evals(steps, np.linspace(5, 3, steps.size))
    recs += [{"step": 100, "event": "final", "eval_loss": 2.9, "eval_batches": 8},
             {"step": 5, "loss": 6.0}]  # a log record without an eval
    const = K.eval_points(recs, 1000.0, TPS, "constant", 100)
    assert const.step.tolist() == list(range(10, 100, 10)) and const.evals == 10
    assert const.tokens.tolist() == [s * TPS for s in range(10, 100, 10)]
    assert const.flops.tolist() == [s * TPS * 1000.0 for s in range(10, 100, 10)]
    cos = K.eval_points(recs, 1000.0, TPS, "cosine", 100)
    assert cos.step.tolist() == [80, 90]  # 100 <= 1.25 s
    assert K.eval_points(recs, 1.0, TPS, "linear", 100, overshoot=2.0).step[0] == 50
    assert K.eval_points(recs, 1.0, TPS, "wsd", 100).step.size == 0
    assert K.final_eval_batches(recs) == 8 and const.eval_batches == 2
    # no tokens_seen: step x tokens per step; a non-finite eval (written as null) is left out;
    # a resumed run's repeated step: its last record
    bare = [{"step": 10, "eval_loss": 4.0}, {"step": 20, "eval_loss": None},
            {"step": 30, "eval_loss": 3.5}, {"step": 30, "eval_loss": 3.4}]
    c = K.eval_points(bare, 2.0, 8, "constant", 100)
    assert c.tokens.tolist() == [80.0, 240.0] and c.loss.tolist() == [4.0, 3.4]


def _law_curves(noise=0.003, seed=0):
    """One constant-lr run per size, evaluated at TOKENS: the runs' final losses (N, D, C, L)
    and their earlier evals as Curves (C = 6 N D here)."""
    rng = np.random.default_rng(seed)
    items, final = [], []
    for i, n in enumerate(SIZES):
        L = law3(n, TOKENS, **LAW) * np.exp(rng.normal(0, noise, TOKENS.size))
        steps = np.round(TOKENS / TPS).astype(int)
        c = K.eval_points(_evals(steps, L), 6 * n, TPS, "constant", int(steps[-1]))
        items.append((f"run{i}", n, "constant", int(steps[-1]), c, 2))
        final.append((n, TOKENS[-1], 6 * n * TOKENS[-1], L[-1]))
    return np.asarray(final).T, K.gather(items)


def test_approach1_recovers_a_law_from_eval_curves():
    (N, D, C, L), curves = _law_curves()
    with pytest.raises(JaxlmError, match="at least 3 sizes with points at 2 or more"):
        fit_approach1(N, D, C, L, n_boot=0)  # one final loss per size: no curves
    f = fit_approach1(N, D, C, L, n_boot=30, curves=curves)
    assert f.fitted and f.n_sizes == 13 and f.n_bracketed >= 10
    assert f.n_curve_points == curves.n_points == 13 * 29 and f.n_points == 13 * 30
    assert f.a.value == pytest.approx(A_TRUE, abs=0.03)
    assert f.b.value == pytest.approx(1 - A_TRUE, abs=0.03)
    assert f.a.interval[0] < A_TRUE < f.a.interval[1]
    assert all(p.from_curve for p in f.points if p.bracketed)
    assert len(f.curves) == 13 and f.curves[0].used == 29
    # the same law as runs at 4 token budgets per size, no curves: no point rests on one
    n, d = np.repeat(SIZES, 4), np.tile(TOKENS[::8], SIZES.size)
    g = fit_approach1(n, d, 6 * n * d, law3(n, d, **LAW), n_boot=0, curves=K.gather([]))
    assert g.fitted and g.n_curve_points == 0 and not any(p.from_curve for p in g.points)


def _fake_sweep(root, noise=0.003, seed=1):
    """A sweep directory as `jaxlm sweep` leaves it, written directly (no training): per size
    a result record and a run directory with config.yaml and a metrics.jsonl eval curve."""
    rng = np.random.default_rng(seed)
    steps = np.round(TOKENS / TPS).astype(int)  # the same for every size
    cfg = to_yaml(load_config(overrides=[
        "model.n_layers=1", "model.d_model=16", "model.n_heads=2", "model.max_seq_len=16",
        "data.seq_len=16", "model.vocab_size=64", "train.batch_size=4",
        f"train.steps={steps[-1]}", "optim.schedule=constant"]))
    for i, n in enumerate(SIZES):
        fpt = 6 * n + 6 * 1 * 16 * 16  # jaxlm.flops.flops_per_token of this config
        L = law3(n, TOKENS, **LAW) * np.exp(rng.normal(0, noise, TOKENS.size))
        run = root / RUNS_DIR / f"m{i}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(cfg)
        recs = _evals(steps[:-1], L[:-1]) + [{"event": "final", "step": int(steps[-1]),
                                              "eval_loss": float(L[-1]), "eval_batches": 2}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        write_record(root, {"name": f"m{i}", "family": "transformer", "status": "ok",
                            "params": int(n), "params_total": int(n) + 1024,
                            "tokens": int(TOKENS[-1]), "flops": f"{fpt * TOKENS[-1]:.6g}",
                            "loss": f"{L[-1]:.6g}", "steps": int(steps[-1])})


def test_cli_fit_reads_a_sweep_directory_with_eval_curves(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep)
    out = tmp_path / "fit"
    assert main(["fit", "--input", str(sweep), "--output", str(out), "--bootstrap", "0",
                 "--holdout", "0"]) == 0
    said = capsys.readouterr().out
    assert "Approach 1: 377 point(s) from the periodic evals of 13 run(s)" in said
    doc = json.loads((out / "fit.json").read_text())
    assert doc["settings"]["curves"] is True
    a1 = doc["families"]["transformer"]["approach1"]
    assert a1["n_curve_points"] == 13 * 29 and a1["curve_overshoot"] == 1.25
    assert [r["used"] for r in a1["curves"]] == [29] * 13
    assert a1["curves"][0]["schedule"] == "constant"
    assert a1["a"]["value"] == pytest.approx(A_TRUE, abs=0.03)
    assert any(p["from_curve"] for p in a1["points"])
    report = (out / "report.md").read_text()
    assert "377 of the 390 points are periodic evals" in report and "| eval curve |" in report

    # --no-curves: the final losses only, one per size: Approach 1 has no curves to envelope
    assert main(["fit", "--input", str(sweep), "--output", str(out), "--bootstrap", "0",
                 "--holdout", "0", "--no-curves"]) == 0
    fam = json.loads((out / "fit.json").read_text())["families"]["transformer"]
    assert "approach1" not in fam and "at least 3 sizes" in fam["skipped"]["approach1"]


def test_cli_curves_bad_overshoot_and_an_unreadable_run_config(tmp_path, capsys):
    assert main(["fit", "--input", str(tmp_path), "--output", str(tmp_path / "fit"),
                 "--curve-overshoot", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jaxlm: error: --curve-overshoot must be >= 1, not 0.5"]
    from jaxlm.scaling import report, sweep_curves

    sweep = tmp_path / "sweep"
    _fake_sweep(sweep)
    (sweep / RUNS_DIR / "m3" / "config.yaml").write_text("model: [not, a, mapping\n")
    (sweep / RUNS_DIR / "m4" / "metrics.jsonl").unlink()  # no curve, no warning
    from jaxlm.scaling.results import compile_runs

    data = report.read_runs(compile_runs(sweep))
    warned = []
    assert sweep_curves.attach(sweep, data, warn=warned.append) == (11 * 29, 11)
    assert len(warned) == 1 and "m3" in warned[0] and warned[0].startswith("jaxlm: warning")
