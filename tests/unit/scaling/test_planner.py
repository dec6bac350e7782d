"""The sweep planner (jaxlm.scaling.planner, plan_inputs, `jaxlm plan`): synthetic laws with
known constants; its forecast widths against real fits of simulated sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlm import cli
from jaxlm.scaling.approach2 import fit_approach2
from jaxlm.scaling.approach3 import fit_approach3
from jaxlm.scaling.plan import Member
from jaxlm.scaling.plan_inputs import calibration_from_runs, seed_noise
from jaxlm.scaling.planner import PriorLaw, simulate_family
from jaxlm.scaling.walltime import Calibration, fit_calibration, predict_wall_time
from scaling_helpers import SWEEP_TINY, write_csv, write_spec

LAW = PriorLaw(E=1.8, A=482.0, B=2085.0, alpha=0.35, beta=0.37, source="test")
BUDGETS = np.geomspace(1e17, 1e20, 4)


def members(shift=0.0, per=5, span=1.0, steps=1000):
    """An IsoFLOP grid of fake members: `per` sizes over +-span decades around each budget's
    optimum under LAW, moved by `shift` decades (C = 6 N D, as Approach 3 assumes)."""
    out = []
    for c in BUDGETS:
        for n in LAW.n_opt(c) * 10 ** shift * np.geomspace(10 ** -span, 10 ** span, per):
            n, d = int(n), int(c / (6 * int(n)))
            out.append(Member(name=f"t-{n}-{c:g}", family="transformer", n_layers=1,
                              d_model=1, params=n, params_total=n, tokens=d, flops=6.0 * n * d,
                              budget=float(c), steps=steps, batch=1, lr=1e-3, seed=0,
                              seq_len=1, overrides=()))
    return out


def test_bracketed_grid_is_predicted_bracketed_and_an_edge_grid_gets_a_size_below():
    good = simulate_family(members(), LAW, 0.01, draws=8, n_boot=5, approaches=(2,))
    assert [b.bracketed for b in good.budgets] == [1.0] * 4
    assert good.add == [] and good.drop == []
    assert {w.quantity: w.fitted for w in good.widths}["approach2.a"] == 1.0

    ms = members(shift=1.3)  # every optimum ~1.3 decades below the smallest size sampled
    edge = simulate_family(ms, LAW, 0.01, draws=8, n_boot=5, approaches=(2,))
    assert all(b.bracketed == 0.0 and b.best_smallest == 1.0 for b in edge.budgets)
    assert {w.quantity: w.fitted for w in edge.widths}["approach2.a"] == 0.0
    step = 10 ** 0.5  # the grid's ratio between neighbouring sizes
    want = sorted(b.sizes[0] / step for b in edge.budgets)
    assert sorted(a["params"] for a in edge.add) == pytest.approx(want, rel=0.01)
    largest = {m.name for m in ms if m.params == max(x.params for x in ms if x.budget == m.budget)}
    assert largest <= set(edge.drop)  # four positions from the best size in every draw
    assert all("never within" in " ".join(edge.flags[n]) for n in edge.drop)

    low = simulate_family(members(shift=-1.3), LAW, 0.01, draws=4, n_boot=0, approaches=(2,))
    assert all(b.bracketed == 0.0 and b.best_largest == 1.0 for b in low.budgets)
    assert sorted(a["params"] for a in low.add) == pytest.approx(
        sorted(b.sizes[-1] * step for b in low.budgets), rel=0.01)


def test_members_with_few_steps_or_extreme_tokens_per_param_are_flagged():
    p = simulate_family(members(steps=40, span=1.5), LAW, 0.01, draws=2, n_boot=0)
    reasons = " ".join(r for v in p.flags.values() for r in v)
    assert "40 steps" in reasons and "tokens per parameter" in reasons


def test_simulate_flags_each_family_against_its_own_window():
    from dataclasses import replace

    from jaxlm.scaling.planner import simulate
    ms = members(span=1.5)
    ms += [replace(m, name="l" + m.name, family="lstm") for m in ms]
    plans = simulate(ms, {"transformer": LAW, "lstm": LAW}, {"transformer": 0.01, "lstm": 0.01},
                     {"lstm": (1e-3, 1e6)}, draws=2, n_boot=0, approaches=(3,))
    flagged = {p.family: " ".join(r for v in p.flags.values() for r in v) for p in plans}
    assert "tokens per parameter" in flagged["transformer"]  # the default window [1, 1000]
    assert "tokens per parameter" not in flagged["lstm"]


def _actual_widths(ms, sigma, draws, fit):
    N = np.array([m.params for m in ms], float)
    D = np.array([m.tokens for m in ms], float)
    rng = np.random.default_rng(123)  # other draws than the planner's
    out = []
    for i in range(draws):
        L = LAW.loss(N, D) * np.exp(rng.normal(0, sigma, N.size))
        out.append(float(np.diff(fit(N, D, L, i).a.interval)[0]))
    return float(np.median(out))


@pytest.mark.parametrize("approach", [2, 3])
def test_predicted_widths_match_the_widths_of_actual_fits_on_simulated_draws(approach):
    """The planner (20 resamples a draw) forecasts the interval width a full fit prints; the
    median over actual fits of other simulated draws (more resamples) must be within a factor
    1.5 of it (stated tolerance: one fit's width varies 2-3x from draw to draw, Approach 2's
    most)."""
    ms, sigma = members(per=7), 0.02
    budget = np.array([m.budget for m in ms])
    if approach == 2:
        plan = simulate_family(ms, LAW, sigma, draws=30, n_boot=20, seed=1, approaches=(2,))
        got = _actual_widths(ms, sigma, 24, lambda N, D, L, i: fit_approach2(
            N, D, 6 * N * D, L, budget=budget, n_boot=100, seed=i))
    else:
        plan = simulate_family(ms, LAW, sigma, draws=6, n_boot=20, seed=1, approaches=(3,))
        got = _actual_widths(ms, sigma, 5, lambda N, D, L, i: fit_approach3(
            N, D, L, n_boot=40, seed=i))
    est = {x.quantity: x for x in plan.widths}[f"approach{approach}.a"]
    assert 1 / 1.5 < est.width / got < 1.5, (est.width, got)
    assert est.coverage >= 0.85  # nominal 95%; the simulated draws' intervals hold the truth


def test_wall_time_calibration_recovers_known_constants():
    rng = np.random.default_rng(0)
    steps, fl = rng.integers(50, 2000, 12), rng.uniform(1e10, 1e13, 12)
    wall = 12.0 + 0.02 * steps + fl / 5e10
    cal = fit_calibration(steps, fl, wall, source="synthetic")
    assert (cal.compile_s, cal.step_s, cal.flops_per_s) == pytest.approx((12, 0.02, 5e10),
                                                                          rel=1e-6)
    m = members()[0]
    assert predict_wall_time([m], Calibration(1.0, 0.5, 1e9, "x")) == pytest.approx(
        [1.0 + 0.5 * m.steps + m.flops / 1e9])


def test_seed_noise_and_calibration_read_an_earlier_sweeps_runs_csv(tmp_path):
    rows, logs = [], {}
    for i, (n, seed) in enumerate([(n, s) for n in (100, 200, 400) for s in (0, 1, 2)]):
        loss = 3.0 * np.exp(0.03 * np.sin(7 * i))
        logs.setdefault(n, []).append(np.log(loss))
        rows.append({"name": f"r{i}", "family": "lstm", "status": "ok", "params": n,
                     "tokens": 1000, "flops": 6e3 * n, "loss": loss, "steps": 10 * n + 300 * seed,
                     "wall_time": 5 + 0.01 * (10 * n + 300 * seed) + 6e3 * n / 1e6,
                     "seed": seed})
    path = write_csv(tmp_path / "runs.csv", rows)
    pooled = np.sqrt(np.mean([np.var(v, ddof=1) for v in logs.values()]))
    assert seed_noise(path) == pytest.approx({"lstm": pooled})
    cal = calibration_from_runs(path)["lstm"]
    assert (cal.compile_s, cal.step_s, cal.flops_per_s) == pytest.approx((5, 0.01, 1e6),
                                                                          rel=1e-4)


def _spec(tmp_path):
    return write_spec(tmp_path, base_overrides={**SWEEP_TINY, "train.batch_size": 2},
                      families={"transformer": {"head_dim": 8, "sizes": [
                          {"n_layers": 1, "d_model": d} for d in (8, 16, 24, 32)]}},
                      isoflop={"budgets": [1e8, 3e8], "min_steps": 5},
                      batch_size={"value": 2})


def test_plan_command_writes_plan_json_and_md(tmp_path, capsys):
    runs = write_csv(tmp_path / "runs.csv", [
        {"name": f"r{i}", "family": "transformer", "status": "ok", "params": 10 * i,
         "tokens": 1, "flops": 1e9 * i * i, "loss": 1, "steps": 100 * i,
         "wall_time": 3 + i + i * i / 10} for i in range(1, 5)])
    out = tmp_path / "w"
    assert cli.main(["plan", "--config", str(_spec(tmp_path)), "--workdir", str(out),
                     "--law", "1.8,482,2085,0.35,0.37", "--runs", runs, "--draws", "3",
                     "--boot", "5"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    fam = plan["families"]["transformer"]
    assert [b["budget"] for b in fam["budgets"]] == [1e8, 3e8]
    assert plan["wall_time"]["total_s"] > 0 and len(plan["wall_time"]["members"]) == 8
    assert "Predicted wall time" in (out / "plan.md").read_text()
    assert "predicted wall time" in capsys.readouterr().out


def test_plan_takes_the_law_and_seed_noise_of_an_earlier_fit(tmp_path):
    const = {"E": 1.5, "A": 300.0, "B": 900.0, "alpha": 0.3, "beta": 0.32}
    fam = {"approach3": {**{k: {"value": v} for k, v in const.items()}, "rmse_log_loss": 0.2},
           "seed_noise": {"pooled_rel_std": 0.037}}
    (tmp_path / "fit.json").write_text(json.dumps({"families": {"transformer": fam}}))
    out = tmp_path / "w"
    assert cli.main(["plan", "--config", str(_spec(tmp_path)), "--workdir", str(out),
                     "--prior", str(tmp_path / "fit.json"), "--draws", "2", "--boot", "0"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    got = plan["families"]["transformer"]
    assert got["sigma"] == 0.037 and "replicate seeds" in plan["settings"]["sigma_source"][
        "transformer"]
    assert {k: got["law"][k] for k in const} == const


@pytest.mark.parametrize("flags, named", [
    (["--law", "1,2,3"], "--law"),
    (["--prior", "missing.json"], "missing.json"),
    (["--draws", "1"], "--draws"),
    (["--sigma", "-1"], "--sigma"),
    (["--runs", "nowhere.csv"], "nowhere.csv"),
])
def test_bad_plan_input_is_one_line(tmp_path, capsys, flags, named):
    assert cli.main(["plan", "--config", str(_spec(tmp_path)), "--workdir",
                     str(tmp_path / "w"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # two tiny training runs (compiles): ~15 s idle, 48 s at load 12
def test_calibrate_trains_two_members_a_few_steps(tmp_path):
    from jaxlm.scaling.plan import expand
    from jaxlm.scaling.plan_inputs import calibrate_by_training
    from jaxlm.scaling.spec import load_spec

    spec = load_spec(_spec(tmp_path))
    cal = calibrate_by_training(spec, expand(spec), str(tmp_path / "w"), steps=4)["transformer"]
    assert cal.compile_s > 0 and cal.step_s >= 0 and cal.flops_per_s > 0
    runs = sorted(p.name for p in (tmp_path / "w" / "calibration").iterdir())
    assert len(runs) == 2 and "-d8-" in runs[1] and "-d32-" in runs[0]  # least, most FLOPs
