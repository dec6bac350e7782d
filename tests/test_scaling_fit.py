"""Scaling-law fitting (jaxlm.scaling): recovery of known laws, interval coverage, degenerate
input, and the `jaxlm fit` command's outputs."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from jaxlm.cli import main
from jaxlm.errors import JaxlmError
from jaxlm.scaling import fit as F


def law3(N, D, E, A, B, al, be):
    return E + A / N ** al + B / D ** be


def random_constants(rng):
    return dict(E=rng.uniform(1.5, 2.5), A=rng.uniform(200, 800), B=rng.uniform(500, 3000),
                al=rng.uniform(0.28, 0.4), be=rng.uniform(0.28, 0.4))


def isoflop_grid(rng, k, noise, budgets=np.geomspace(1e17, 1e20, 5), per_budget=9):
    """IsoFLOP runs around each budget's optimum (+-1.2 decades of N), multiplicative noise."""
    N, D = [], []
    lG = (np.log(k["al"] * k["A"] / (k["be"] * k["B"]))) / (k["al"] + k["be"])
    for C in budgets:
        n_opt = np.exp(lG + k["be"] / (k["al"] + k["be"]) * np.log(C / 6))
        n = n_opt * np.geomspace(10 ** -1.2, 10 ** 1.2, per_budget)
        N.append(n), D.append(C / (6 * n))
    N, D = np.concatenate(N), np.concatenate(D)
    L = law3(N, D, **k) * np.exp(rng.normal(0, noise, N.size))
    return N, D, 6 * N * D, L


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize("seed", [0, 1])
def test_approach3_recovers_random_law(seed):
    rng = np.random.default_rng(seed)
    k = random_constants(rng)
    N, D, _, L = isoflop_grid(rng, k, noise=0.003)
    f = F.fit_approach3(N, D, L, n_boot=0)
    assert f.E.value == pytest.approx(k["E"], rel=0.05)
    assert f.alpha.value == pytest.approx(k["al"], abs=0.02)
    assert f.beta.value == pytest.approx(k["be"], abs=0.02)
    assert f.A.value == pytest.approx(k["A"], rel=0.4)
    assert f.B.value == pytest.approx(k["B"], rel=0.4)
    assert f.a.value == pytest.approx(k["be"] / (k["al"] + k["be"]), abs=0.02)
    assert np.sqrt(np.mean(np.square(f.residuals_log_loss))) < 0.006
    assert f.E.interval is None and f.boot is None  # no bootstrap


def test_approach2_recovers_allocation_exponent():
    rng = np.random.default_rng(3)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.002)
    C = C * np.exp(rng.uniform(-0.05, 0.05, C.size))  # measured FLOPs scatter within a budget
    f = F.fit_approach2(N, D, C, L, n_boot=50)
    a_true = k["be"] / (k["al"] + k["be"])
    assert f.n_budgets == 5
    assert f.a.value == pytest.approx(a_true, abs=0.04)
    assert f.b.value == pytest.approx(1 - a_true, abs=0.06)
    lo, hi = f.a.interval
    assert lo < f.a.value < hi
    p = F.approach2_predict(f, [1e21])
    assert p.N_opt_interval[0][0] < p.N_opt[0] < p.N_opt_interval[0][1]
    assert p.loss is None and "loss" not in p.to_json()


@pytest.mark.parametrize("irreducible", [True, False])
def test_power_law_recovers(irreducible):
    rng = np.random.default_rng(4)
    E, A, al = (1.7 if irreducible else 0.0), 80.0, 0.3
    x = np.geomspace(1e5, 1e10, 12)
    L = (E + A * x ** -al) * np.exp(rng.normal(0, 0.003, x.size))
    f = F.fit_power_law(x, L, irreducible=irreducible, n_boot=50, name="N")
    assert f.alpha.value == pytest.approx(al, abs=0.03)
    assert f.A.value == pytest.approx(A, rel=0.3)
    if irreducible:
        assert f.E.value == pytest.approx(E, abs=0.1)
    else:
        assert f.E is None and "E" not in f.to_json()
        assert f.x_c.value == pytest.approx(A ** (1 / al), rel=0.5)
        assert f.to_json()["N_c"] == f.x_c.to_json()


def test_compute_frontier_is_lower_envelope():
    C = np.array([1, 2, 2, 3, 4, 5.0])
    L = np.array([5, 4, 4.5, 4.2, 3, 3.5])
    assert F.compute_frontier(C, L).tolist() == [0, 1, 4]


def test_predict_matches_brute_force():
    rng = np.random.default_rng(5)
    k = random_constants(rng)
    N, D, _, L = isoflop_grid(rng, k, noise=0.0)
    f = F.fit_approach3(N, D, L, n_boot=0)
    C = 1e22
    p = F.predict(f, C)
    n = np.geomspace(1e6, 1e13, 200001)
    L_grid = law3(n, C / (6 * n), f.E.value, f.A.value, f.B.value, f.alpha.value, f.beta.value)
    assert p.N_opt[0] == pytest.approx(n[np.argmin(L_grid)], rel=1e-3)
    assert p.loss[0] == pytest.approx(L_grid.min(), rel=1e-6)
    assert p.N_opt[0] * p.D_opt[0] * 6 == pytest.approx(C)


def test_bootstrap_intervals_cover_at_about_nominal_rate():
    """40 draws of a random law, 90% intervals from 30 resamples: pooled coverage of E, alpha
    and beta (Approach 3) and of alpha (a Kaplan power law) should be near 0.9."""
    rng = np.random.default_rng(6)
    hits3, hits1 = [], []
    for _ in range(40):
        k = random_constants(rng)
        N, D, _, L = isoflop_grid(rng, k, noise=0.01, budgets=np.geomspace(1e17, 1e20, 4),
                                  per_budget=8)
        f = F.fit_approach3(N, D, L, n_boot=30, level=0.9, seed=int(rng.integers(1 << 30)),
                            n_starts=2)
        for est, true in ((f.E, k["E"]), (f.alpha, k["al"]), (f.beta, k["be"])):
            lo, hi = est.interval
            hits3.append(lo <= true <= hi)
        x = np.geomspace(1e5, 1e9, 10)
        y = 50 * x ** -k["al"] * np.exp(rng.normal(0, 0.02, x.size))
        g = F.fit_power_law(x, y, irreducible=False, n_boot=30, level=0.9,
                            seed=int(rng.integers(1 << 30)))
        lo, hi = g.alpha.interval
        hits1.append(lo <= k["al"] <= hi)
    assert 0.72 <= np.mean(hits3) <= 1.0, np.mean(hits3)
    assert 0.7 <= np.mean(hits1) <= 1.0, np.mean(hits1)


# ------------------------------------------------------------------ typed records


def test_fit_all_record_is_fit_json_and_reads_like_a_dict():
    """fit_all gives a frozen FamilyFit whose to_json() is fit.json's family entry (its keys
    in fit.json's order, no bootstrap samples or theta), and which reads like the dicts it
    replaced (`jaxlm fit`'s summary line and the notebooks read it so)."""
    rng = np.random.default_rng(9)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.005, budgets=np.geomspace(1e17, 1e19, 4),
                              per_budget=5)
    f = F.fit_all(N, D, C * 1.05, L, n_boot=8)
    assert isinstance(f, F.FamilyFit) and isinstance(f.approach3, F.Approach3Fit)
    assert isinstance(f.approach2, F.Approach2Fit) and isinstance(f.holdout, F.HoldoutCheck)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.approach3.E = None
    doc = f.to_json()
    assert list(doc) == ["n_points", "skipped", "L(N)", "L(D)", "L(C)", "approach2",
                         "approach3", "predictions", "holdout"]
    assert list(doc["approach3"]) == ["form", "n_points", "huber_delta", "objective", "E", "A",
                                      "B", "alpha", "beta", "a", "b", "N", "D", "loss",
                                      "residuals_log_loss", "rmse_log_loss"]
    assert list(doc["L(C)"]) == ["form", "n_points", "A", "alpha", "C_c", "x", "loss",
                                 "residuals_log_loss", "rmse_log_loss", "E", "index"]
    assert list(doc["approach2"]) == ["form", "n_budgets", "a", "k", "b", "k_D", "budgets"]
    assert list(doc["predictions"]) == ["approach3", "approach2", "L(C)"]
    assert list(doc["predictions"]["L(C)"]) == ["C", "loss"]
    assert list(doc["holdout"]["fit"]) == ["E", "A", "B", "alpha", "beta"]
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    assert F.strip_private({"fam": f}) == {"fam": doc}
    # the dict view: the same keys, with the in-memory values
    assert list(f) == list(doc) and list(f["approach3"]) == list(doc["approach3"])
    assert f["approach3"]["E"]["value"] == f.approach3.E.value
    assert f.get("L(C)", {}).get("alpha", {}).get("value") == f.power_laws["L(C)"].alpha.value
    assert "approach2" in f and "nope" not in f and f["skipped"] == {}
    assert F.predict(f["approach3"], 1e21).to_json() == F.predict(f.approach3, 1e21).to_json()


def test_records_write_non_finite_values_as_null():
    assert F.Estimate(2.0).to_json() == {"value": 2.0}
    assert F.Estimate(float("nan"), (1.0, float("inf"))).to_json() == {
        "value": None, "interval": [1.0, None]}
    assert F.Prediction(C=[1e20], loss=[np.float64(2.5)]).to_json() == {"C": [1e20],
                                                                        "loss": [2.5]}


# ------------------------------------------------------------------ degenerate input


def test_degenerate_inputs_raise_one_line_errors():
    N = np.geomspace(1e6, 1e9, 10)
    D, L = 20 * N, np.linspace(3, 2, 10)
    with pytest.raises(JaxlmError, match="too few points"):
        F.fit_approach3(N[:5], D[:5], L[:5])
    with pytest.raises(JaxlmError, match="positive"):
        F.fit_approach3(N, D, np.r_[L[:-1], -1.0])
    with pytest.raises(JaxlmError, match="not a finite number"):
        F.fit_approach3(N, D, np.r_[L[:-1], np.nan])
    C = np.repeat([1e18, 1e19, 1e20], [4, 4, 2])
    with pytest.raises(JaxlmError, match="fewer|at least 3"):
        F.fit_approach2(N, C / (6 * N), C, L)
    with pytest.raises(JaxlmError, match="two IsoFLOP budgets"):
        F.fit_approach2(N, 1e19 / (6 * N), np.full(10, 1e19), L)


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def runs_rows(seed=0, families=("transformer", "lstm")):
    rng = np.random.default_rng(seed)
    rows = []
    for j, fam in enumerate(families):
        k = random_constants(rng)
        N, D, C, L = isoflop_grid(rng, k, noise=0.005, budgets=np.geomspace(1e17, 1e19, 4),
                                  per_budget=5)
        C = C * 1.05  # measured FLOPs include attention: not exactly 6 N D
        for i in range(N.size):
            rows.append({"name": f"{fam}-{i}", "family": fam, "params": int(N[i]),
                         "params_total": int(N[i] * 1.3), "tokens": int(D[i]),
                         "flops": C[i], "loss": L[i], "status": "ok"})
    rows.append({"name": "broken", "family": families[0], "params": 10, "params_total": 10,
                 "tokens": "", "flops": "", "loss": "", "status": "failed"})
    return rows


@pytest.mark.parametrize("case, message", [
    ("missing_file", "not found"),
    ("missing_column", "missing column"),
    ("nan_row", "NaN"),
    ("nonpositive", "positive"),
    ("too_few", "too few points"),
    ("one_budget_two_sizes", "at least 3"),
])
def test_cli_degenerate_input_exit_2_one_line(tmp_path, capsys, case, message):
    rows = [{k: r[k] for k in ("params", "tokens", "flops", "loss", "status")}
            for r in runs_rows(families=("t",))]
    extra = []
    if case == "missing_column":
        rows = [{"params": r["params"], "loss": r["loss"]} for r in rows]
    elif case == "nan_row":
        rows[3]["loss"] = "nan"
    elif case == "nonpositive":
        rows[2]["tokens"] = 0
    elif case == "too_few":
        rows = rows[:5]
    elif case == "one_budget_two_sizes":
        rows = [r for r in rows[:-1] if float(r["flops"]) < 3e17 or int(r["params"]) % 3 == 0]
        extra = ["--approach2", "yes"]
    path = tmp_path / "runs.csv" if case == "missing_file" else write_csv(tmp_path / "r.csv",
                                                                          rows)
    code = main(["fit", "--input", str(path), "--output", str(tmp_path / "out"), "--bootstrap",
                 "0", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxlm: error:") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


# ------------------------------------------------------------------ the CLI's outputs


def test_cli_writes_fit_json_report_and_plots(tmp_path, capsys):
    path = write_csv(tmp_path / "runs.csv", runs_rows())
    out = tmp_path / "fit"
    assert main(["fit", "--input", path, "--output", str(out), "--bootstrap", "20",
                 "--predict", "1e21"]) == 0
    for name in ("fit.json", "report.md", "loss_vs_compute.png", "law_vs_data.png",
                 "holdout.png", "isoflop_transformer.png", "isoflop_lstm.png"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "fit.json").read_text())
    assert set(doc["families"]) == {"transformer", "lstm"}
    fam = doc["families"]["transformer"]
    assert fam["n_points"] == 20  # the failed row is ignored
    for key in ("E", "A", "B", "alpha", "beta"):
        assert len(fam["approach3"][key]["interval"]) == 2
    assert len(fam["approach3"]["residuals_log_loss"]) == 20
    assert {"L(N)", "L(D)", "L(C)", "approach2", "holdout"} <= set(fam)
    assert 1e21 in fam["predictions"]["approach3"]["C"]
    report = (out / "report.md").read_text()
    assert "Families compared" in report and "frontier exponent" in report
    assert "Approach 3" in capsys.readouterr().out


@pytest.mark.parametrize("second", ["tokens", "flops"])
def test_cli_accepts_minimal_published_style_csv(tmp_path, second):
    rng = np.random.default_rng(8)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.003, budgets=np.geomspace(1e17, 1e19, 3),
                              per_budget=5)
    rows = [{"params": N[i], second: (D if second == "tokens" else C)[i], "loss": L[i]}
            for i in range(N.size)]
    out = tmp_path / "fit"
    assert main(["fit", "--input", write_csv(tmp_path / "p.csv", rows), "--output", str(out),
                 "--bootstrap", "0", "--holdout", "0"]) == 0
    doc = json.loads((out / "fit.json").read_text())
    a3 = doc["families"]["all"]["approach3"]
    assert a3["alpha"]["value"] == pytest.approx(k["al"], abs=0.03)
    assert (out / "report.md").exists() and (out / "isoflop.png").exists()


def test_read_runs_filters_status_dedups_and_derives_tokens(tmp_path):
    from jaxlm.scaling.report import read_runs

    rows = [
        {"name": "a", "family": "t", "status": "preempted", "params": 10, "flops": "", "loss": "",
         "budget": "1e6"},
        {"name": "a", "family": "t", "status": "ok", "params": 10, "flops": 6e6, "loss": 3.0,
         "budget": "1e6"},
        {"name": "b", "family": "t", "status": "failed", "params": 20, "flops": "", "loss": "",
         "budget": "1e6"},
        {"name": "b", "family": "t", "status": "ok", "params": 20, "flops": 6e6, "loss": 2.9,
         "budget": "1e6"},
        {"name": "c", "family": "l", "status": "done", "params": 30, "flops": 6e7, "loss": 2.5,
         "budget": "1e7"},
    ]
    data = read_runs(write_csv(tmp_path / "r.csv", rows))
    assert set(data) == {"t", "l"}
    assert data["t"]["N"].tolist() == [10, 20] and data["t"]["L"].tolist() == [3.0, 2.9]
    assert data["t"]["D"].tolist() == [1e5, 5e4]  # D = C / (6 N)
    assert data["t"]["budget"] == ["1e6", "1e6"]
