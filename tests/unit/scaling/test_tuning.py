"""Hyperparameter axes in the fit: the best run per (N, D), through `jaxlm fit`'s reader."""

from __future__ import annotations

import json

import numpy as np

from jaxlm.scaling import report, tuning
from scaling_helpers import law3, write_csv


def test_best_per_nd_keeps_the_lowest_loss_of_each_setting():
    N = np.array([1e6, 1e6, 1e6, 1e6, 2e6, 2e6])
    D = np.array([1e9, 1e9, 1e9, 2e9, 1e9, 1.000001e9])  # the last two: one (N, D)
    L = np.array([3.0, 2.5, 2.9, 2.4, 2.6, 2.55])
    assert tuning.best_per_nd(N, D, L).tolist() == [1, 3, 5]
    lr = np.array([1e-3, 2e-3, 4e-3, 2e-3, 1e-3, 2e-3])
    t = tuning.summarize(N, D, L, list("abcdef"), {"lr": lr})
    assert [(c.best, c.runs, c.at_edge) for c in t.choices] == [
        ("b", 3, []), ("d", 1, []), ("f", 2, ["lr"])]
    assert t.lr_moved == [(1e6, 2e-3, 1.0), (2e6, 2e-3, 1.0)]
    assert tuning.summarize(N[:2], D[[0, 3]], L[:2], ["a", "b"], {}) is None
    # seeds are replicates, not settings: each is kept
    seed = np.array([0, 1, 0, 0, 0, 0])
    assert tuning.best_per_nd(N, D, L, seed).tolist() == [1, 2, 3, 5]


def test_fit_uses_the_best_run_per_nd_and_reports_the_optimum(tmp_path):
    """runs.csv with an lr axis (the best lr moves from 2e-3 at the smallest size to 1e-3 at
    the largest) and wsd trunks (left out: their lr never decayed)."""
    rows = []
    for n in np.geomspace(1e6, 1e8, 5):
        best = 2e-3 if n < 1e7 else 1e-3
        for d in np.geomspace(1e9, 1e11, 4):
            for lr in (5e-4, 1e-3, 2e-3, 4e-3):
                loss = law3(n, d, 1.8, 400.0, 1500.0, 0.34, 0.30) * (1 + abs(np.log(lr / best)))
                rows.append({"name": f"n{n:.0e}-d{d:.0e}-lr{lr:g}", "family": "transformer",
                             "status": "ok", "params": n, "tokens": d, "flops": 6 * n * d,
                             "loss": loss, "lr": lr, "b2": "", "role": "branch"})
        rows.append({"name": f"n{n:.0e}-trunk", "family": "transformer", "status": "ok",
                     "params": n, "tokens": 1e11, "flops": 6 * n * 1e11, "loss": 0.1,
                     "lr": 2e-3, "b2": "", "role": "trunk"})
    data = report.read_runs(write_csv(tmp_path / "runs.csv", rows))
    fam = data["transformer"]
    assert fam["N"].size == 20 and fam["L"].min() > 1.0  # 80 runs -> 20 (N, D); no trunk
    assert all(n.endswith(("lr0.002", "lr0.001")) for n in fam["names"])
    t = fam["tuning"]
    assert [m[2] for m in t.lr_moved] == [1.0, 1.0, 0.5, 0.5, 0.5]
    fits = report.fit_runs(data, n_boot=0, holdout=0)
    md = report.markdown(fits, "runs.csv", 0.95, 0)
    assert "the best run per (N, D)" in md and "(x0.5)" in md
    assert "### Approaches 1, 2 and 3 side by side" in md and "| 1 (envelope) | 0." in md
    doc = json.loads(json.dumps(fits["transformer"].to_json(), allow_nan=False))
    assert doc["approach1"]["n_sizes"] == 5 and len(doc["tuning"]["choices"]) == 20
