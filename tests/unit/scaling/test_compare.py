"""Comparing families (jaxlm.scaling.compare) on synthetic laws with known constants: the same law
gives intervals that cover no difference, different laws significant ones, replicate seeds widen
the intervals, flagged fits are refused, and families trained under different data are flagged."""

import json

import numpy as np
import pytest

from scaling_helpers import isoflop_grid, law3, n_opt_true, write_csv
from jaxlm.scaling import compare as K
from jaxlm.scaling import replicates
from jaxlm.scaling.approach3 import GRID, fit_approach3

LAW = dict(E=1.8, A=400.0, B=1500.0, al=0.34, be=0.30)
BUDGETS = np.geomspace(1e17, 1e19, 4)


def _a_draws(fit3):
    return fit3.boot[:, 4] / (fit3.boot[:, 3] + fit3.boot[:, 4])


def _quick_fit3(N, D, L, seed, cells=None, n_boot=20):
    # a coarse start grid: the synthetic law sits well inside it, and 20 sweeps stay fast
    return fit_approach3(N, D, L, n_boot=n_boot, seed=seed, n_starts=1, grid=GRID[::30],
                         cells=cells)


def test_same_law_intervals_cover_no_difference_in_most_sweeps():
    """20 simulated sweeps of two families drawn from one law (1% seed noise): the 95% intervals
    of the compute-optimal loss gap and of the difference in a cover 0 in at least 17 of 20
    (nominal 19; measured 20 and 19; P(<= 16 of 20) = 1.6% at 95% coverage)."""
    cover_gap = cover_a = 0
    C = np.asarray([BUDGETS[-1]])
    for s in range(20):
        rng = np.random.default_rng(100 + s)
        f = [_quick_fit3(*np.delete(isoflop_grid(rng, LAW, 0.01, BUDGETS, per_budget=6), 2, 0),
                         seed=s) for _ in range(2)]
        pick = np.random.default_rng(s)
        gap = K.frontier_gap(K.approach3_frontier_logs(f[0], C),
                             K.approach3_frontier_logs(f[1], C), C, pick)
        diff = K.scalar_difference(f[0].a.value, f[1].a.value, _a_draws(f[0]), _a_draws(f[1]),
                                   pick)
        assert gap["n_draws"] == diff["n_draws"] == 20
        cover_gap += not gap["significant"]
        cover_a += not diff["significant"]
    assert cover_gap >= 17 and cover_a >= 17, (cover_gap, cover_a)


@pytest.fixture(scope="module")
def three_families():
    """A reference law, the same law 5% higher (a frontier gap) and a law whose a is larger by
    0.14 (beta/(alpha+beta): 0.469 -> 0.611)."""
    from jaxlm.scaling.fit import fit_all

    rng = np.random.default_rng(7)
    other_a = dict(LAW, al=0.28, be=0.44)
    out = {}
    for name, law, scale in (("ref", LAW, 1.0), ("higher", LAW, 1.05), ("steeper", other_a, 1.0)):
        N, D, C, L = isoflop_grid(rng, law, 0.005, BUDGETS, per_budget=7)
        out[name] = fit_all(N, D, C, L * scale, n_boot=40, holdout=0)
    return out


def test_different_laws_differ_significantly(three_families):
    comp = K.compare(three_families, seed=1)
    got = {(d.family, d.quantity): d for d in comp.differences}
    assert comp.reference == "ref" and comp.reference_C["higher"] == pytest.approx(1e19)
    for q in ("frontier_gap", "frontier_gap.approach3"):
        d = got["higher", q]
        assert d.identified and d.significant, d
        assert d.estimate.value == pytest.approx(0.05, abs=0.015)
        assert d.estimate.interval[0] > 0 and d.p_value <= 0.05
    for q in ("approach3.a", "approach2.a"):
        assert not got["higher", q].significant, got["higher", q]  # same a
    true_da = 0.44 / 0.72 - 0.30 / 0.64
    d = got["steeper", "approach3.a"]
    assert d.significant and d.estimate.value == pytest.approx(true_da, abs=0.05)
    lo, hi = d.estimate.interval
    assert 0 < lo < hi
    ratio = got["steeper", "N_opt_ratio.approach3"]
    true_ratio = n_opt_true(dict(LAW, al=0.28, be=0.44), 1e19) / n_opt_true(LAW, 1e19)
    assert ratio.identified and ratio.C == pytest.approx(1e19)
    assert ratio.estimate.interval[0] <= true_ratio * 1.25 and ratio.estimate.interval[1] >= true_ratio / 1.25
    doc = json.loads(json.dumps(comp.to_json(), allow_nan=False))
    first = doc["differences"][0]
    assert first["identified"] and first["quantity"] == "frontier_gap" and first["per_budget"]
    text = "\n".join(K.markdown(comp))
    assert "The higher frontier is higher than the ref frontier by 5." in text
    assert "Approach 3 exponent a: steeper minus ref = +0.1" in text and ": significant" in text


def _replicated(rng, law, cell_sd, seed_sd, n_seeds=3):
    """An IsoFLOP grid whose every (N, D) cell is trained n_seeds times: a loss offset shared by
    the cell's seeds (cell_sd, e.g. a data order or init effect of the size) plus seed noise."""
    N, D, C, _ = isoflop_grid(rng, law, 0.0, BUDGETS, per_budget=6)
    cell = np.exp(rng.normal(0, cell_sd, N.size))
    rep = lambda a: np.repeat(a, n_seeds)
    L = rep(law3(N, D, **law) * cell) * np.exp(rng.normal(0, seed_sd, N.size * n_seeds))
    return rep(N), rep(D), L, np.tile(np.arange(n_seeds), N.size)


def test_replicate_seeds_widen_intervals_over_a_run_level_bootstrap():
    """Seeds of one (N, D) are not independent points: resampling runs (as if they were)
    understates the uncertainty of a difference; the hierarchical bootstrap does not."""
    rng = np.random.default_rng(3)
    fams = [_replicated(rng, LAW, 0.01, 0.003) for _ in range(2)]
    width = {}
    for how in ("runs", "hierarchical"):
        f = []
        for N, D, L, seed in fams:
            cells = replicates.cells(N, D, seed) if how == "hierarchical" else None
            f.append(_quick_fit3(N, D, L, seed=0, cells=cells, n_boot=40))
        d = K.scalar_difference(f[0].a.value, f[1].a.value, _a_draws(f[0]), _a_draws(f[1]),
                                np.random.default_rng(0))
        width[how] = np.diff(d["estimate"].interval)[0]
    assert replicates.cells(*fams[0][:2], fams[0][3]) is not None
    assert width["hierarchical"] > 1.3 * width["runs"], width


def _edge_and_clean():
    from jaxlm.scaling.fit import fit_all

    rng = np.random.default_rng(13)
    edge = isoflop_grid(rng, LAW, 0.002, np.geomspace(1e17, 1e19, 3), per_budget=7,
                        shift=[0, 1.4, -1.4])
    clean = isoflop_grid(rng, LAW, 0.002, np.geomspace(1e17, 1e19, 3), per_budget=7)
    return {"clean": fit_all(*clean, n_boot=0, holdout=0),
            "edge": fit_all(*edge, n_boot=0, holdout=0)}


def test_a_family_with_unbracketed_minima_is_refused_with_the_reason():
    comp = K.compare(_edge_and_clean())
    got = {d.quantity: d for d in comp.differences}
    for q in ("approach2.a", "N_opt_ratio.approach2"):
        d = got[q]
        assert not d.identified and d.estimate is None and d.significant is None
        assert d.reason.startswith("not identified: edge: Approach 2 not fitted: 1 of 3 IsoFLOP "
                                   "budgets have a minimum bracketed"), d.reason
        assert "not identified: edge: Approach 2" in K.sentence(d)
        assert d.to_json()["identified"] is False and "estimate" not in d.to_json()
    gap = got["frontier_gap"]  # the compute frontier needs no bracketed minimum
    assert gap.identified and gap.estimate.interval is None and gap.significant is None
    assert "no interval (no bootstrap)" in K.sentence(gap)


def test_families_trained_under_different_data_get_a_warning(tmp_path):
    from jaxlm.scaling.report import read_runs

    rows = []
    for fam, tok in (("t", "byte"), ("l", "sentencepiece:4096")):
        N, D, C, L = isoflop_grid(np.random.default_rng(0), LAW, 0.01, BUDGETS[:2], per_budget=3)
        rows += [{"name": f"{fam}{i}", "family": fam, "params": N[i], "tokens": D[i],
                  "loss": L[i], "corpus": "stdlib", "tokenizer": tok, "seq_len": 64,
                  "flops_rule": "counter"} for i in range(N.size)]
    data = read_runs(write_csv(tmp_path / "runs.csv", rows))
    assert data["l"]["conditions"]["tokenizer"] == {"sentencepiece:4096"}
    diags = K.conditions_check({f: d["conditions"] for f, d in data.items()})
    assert [(d.code, d.severity, d.what) for d in diags] == [
        ("conditions_differ", "warning", "families.tokenizer")]
    assert "t: byte; l: sentencepiece:4096" in diags[0].detail
    same = {"t": data["t"]["conditions"], "l": data["t"]["conditions"]}
    assert K.conditions_check(same) == []
    unknown = K.conditions_check({"t": {}, "l": {}})
    assert [(d.code, d.severity) for d in unknown] == [("conditions_unknown", "info")]
    rule = K.conditions_check({"t": {"flops_rule": {"6N"}}, "l": {"flops_rule": {"counter"}}})
    assert rule[0].code == "conditions_differ" and rule[0].what == "families.flops_rule"


def test_a_degenerate_frontier_is_flagged_and_its_gap_refused(three_families, monkeypatch):
    """The first redesigned CPU demo's Transformer frontier fitted alpha_C = 2095 with a narrow
    interval (E on the lowest loss): no interval flag fired and the gap's point estimate was NaN
    yet called significant. Now L(C).alpha > 5 is a warning and the gap is refused."""
    import dataclasses

    from jaxlm.scaling import diagnostics
    from jaxlm.scaling.records import Estimate

    ref = three_families["ref"]
    law = ref.power_laws["L(C)"]
    steep = dataclasses.replace(law, alpha=Estimate(2095.0, (1520.0, 4280.0)))
    fits = {"ref": ref, "flat": dataclasses.replace(
        three_families["higher"], power_laws={**ref.power_laws, "L(C)": steep})}
    diags = diagnostics.diagnose(fits)
    assert any(d.code == "exponent_out_of_range" and d.what == "L(C).alpha"
               and d.family == "flat" and d.severity == diagnostics.WARNING for d in diags)
    assert not any(d.what == "L(C).alpha" and d.family == "ref" for d in diags)
    got = {d.quantity: d for d in K.compare(fits, seed=0).differences}
    for q in ("frontier_gap", "alpha_C"):
        assert not got[q].identified and "flat: L(C).alpha = 2.1e+03" in got[q].reason, got[q]
    # a difference whose point estimate is not finite is never reported as a result
    monkeypatch.setattr(K, "frontier_gap", lambda *a, **k: {"estimate": Estimate(float("nan")),
                                                             "n_draws": 0})
    gap = {d.quantity: d for d in K.compare({"ref": ref, "higher": three_families["higher"]},
                                            seed=0).differences}["frontier_gap"]
    assert not gap.identified and gap.reason.endswith("point estimate is not finite")
