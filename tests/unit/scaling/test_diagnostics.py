"""jaxlm.scaling.diagnostics: every flag fires on a constructed case and stays quiet on a clean
fit; the old CPU demo sweep (tests/data/old_cpu_demo_runs.csv, replaced in benchmarks/cpu_demo/) raises every flag issue 15 lists."""

import dataclasses

import numpy as np
import pytest

from helpers import REPO_ROOT
from jaxlm.scaling import diagnostics as D
from jaxlm.scaling import fit as F
from jaxlm.scaling.records import Estimate
from scaling_helpers import isoflop_grid, n_opt_true, random_constants

BUDGETS = np.geomspace(1e17, 1e20, 5)


@pytest.fixture(scope="module")
def clean():
    """A bracketed IsoFLOP grid of a known law (9 sizes over +-1.2 decades per budget)."""
    rng = np.random.default_rng(11)
    k = random_constants(rng)
    runs = isoflop_grid(rng, k, noise=0.003, budgets=BUDGETS)
    return k, F.fit_all(*runs, n_boot=40), runs


def test_bracketed_grid_recovers_n_opt_and_raises_no_diagnostic(clean):
    """N_opt within 0.1 decade at every budget, a within 0.04, and no warning. The only notes
    are on the Kaplan laws: L(N) and L(D) take the best loss per size / token budget, which on
    an IsoFLOP grid is no law of N or D alone (here E lands above the lowest loss, and alpha may
    be uncertain by an order of magnitude). Fitted as pure power laws: no diagnostic at all."""
    k, f, runs = clean
    assert f.approach2.n_bracketed == f.approach2.n_budgets == 5
    for b in f.approach2.budgets:
        assert b.bracketed and b.excluded is None
        assert np.log10(b.N_opt / n_opt_true(k, b.C)) == pytest.approx(0, abs=0.1)
    assert f.approach2.a.value == pytest.approx(k["be"] / (k["al"] + k["be"]), abs=0.04)
    diags = D.family_diagnostics("clean", f)
    assert D.warnings(diags) == []
    assert {(d.code, d.what) for d in diags} <= {
        *[("at_bound", f"{key}.E") for key in ("L(N)", "L(D)", "L(C)")],
        *[(code, f"{key}.alpha") for key in ("L(N)", "L(D)")
          for code in ("interval_spans_zero", "interval_spans_orders")]}
    assert D.family_diagnostics("clean", F.fit_all(*runs, n_boot=40, irreducible=False)) == []


# Each case changes one quantity of the clean fit into what a non-identifying sweep gives.
def _budget0(f, **changes):
    b0 = dataclasses.replace(f.approach2.budgets[0], **changes)
    return dataclasses.replace(f, approach2=dataclasses.replace(
        f.approach2, budgets=(b0, *f.approach2.budgets[1:])))


def _a3(f, **changes):
    return dataclasses.replace(f, approach3=dataclasses.replace(f.approach3, **changes))


def _law(f, key, **changes):
    laws = dict(f.power_laws)
    laws[key] = dataclasses.replace(laws[key], **changes)
    return dataclasses.replace(f, power_laws=laws)


def _a2(f, **changes):
    return dataclasses.replace(f, approach2=dataclasses.replace(f.approach2, **changes))


CASES = {
    "not_bracketed": (lambda f: _budget0(f, bracketed=False, excluded="not bracketed: x"),
                      "approach2.budget C=1e+17"),
    "few_sizes": (lambda f: _budget0(f, N=f.approach2.budgets[0].N[:4]),
                  "approach2.budget C=1e+17"),
    "approach2_refused": (lambda f: _a2(f, a=None, k=None, b=None, k_D=None, refused="0 of 5",
                                        a_all_vertices=-0.44), "approach2"),
    "at_bound": (lambda f: _a3(f, E=Estimate(3.8e-13, (3.8e-13, 3.8e-13))), "approach3.E"),
    "interval_spans_zero": (lambda f: _a3(f, alpha=Estimate(3.2, (-0.33, 34.8))),
                            "approach3.alpha"),
    "interval_spans_orders": (lambda f: _a3(f, alpha=Estimate(1.1, (0.35, 28.0))),
                              "approach3.alpha"),
    "negative_exponent": (lambda f: _law(f, "L(N)", alpha=Estimate(-0.42)), "L(N).alpha"),
    "exponent_out_of_range": (lambda f: _a2(f, b=Estimate(1.4)), "approach2.b"),
    "a_disagree": (lambda f: _a3(f, a=Estimate(f.approach2.a.value + 0.3)),
                   "approach2/approach3.a"),
}


@pytest.mark.parametrize("code", list(CASES))
def test_each_flag_fires_on_its_case_and_not_on_the_clean_fit(clean, code):
    mutate, what = CASES[code]
    _, f, _ = clean
    assert not [d for d in D.warnings(D.family_diagnostics("t", f)) if d.code == code]
    found = [d for d in D.warnings(D.family_diagnostics("t", mutate(f))) if d.code == code]
    assert [(d.what, d.severity) for d in found] == [(what, D.WARNING)], found
    d = found[0]
    assert d.family == "t" and d.detail and "\n" not in d.detail
    assert d.line().startswith(f"warning: t: {what}: ")
    assert list(d.to_json()) == ["code", "severity", "family", "what", "detail", "numbers"]


def test_power_law_e_at_its_bound_is_a_note(clean):
    """A Kaplan law's E at 0 says the runs show no floor: a note (the pure power law still
    describes the runs in range), not a warning; Approach 3's E there is a warning."""
    _, f, _ = clean
    assert "E" in f.power_laws["L(D)"]
    found = [d for d in D.family_diagnostics("t", _law(f, "L(D)", E=Estimate(3.3e-14)))
             if d.what == "L(D).E"]
    assert [(d.code, d.severity) for d in found] == [("at_bound", D.INFO)]
    assert "bound 0" in found[0].detail
    assert D.warnings(found) == []


@pytest.fixture(scope="module")
def demo():
    from jaxlm.scaling import report

    data = report.read_runs(REPO_ROOT / "tests" / "data" / "old_cpu_demo_runs.csv")
    fits = report.fit_runs(data, n_boot=200)
    return fits, D.diagnose(fits)


def _by(diags, family, code):
    return [d for d in diags if d.family == family and d.code == code]


def test_old_demo_sweep_raises_every_flag_of_issue_15(demo):
    fits, diags = demo
    # six of eight IsoFLOP profiles minimised at the smallest size: not bracketed, left out
    out = [d for d in diags if d.code == "not_bracketed"]
    at_smallest = [d for d in out if d.numbers["best_N"] == d.numbers["N_min"]]
    assert len(at_smallest) == 6 and all("smallest size sampled" in d.detail for d in at_smallest)
    assert all("left out of Approach 2" in d.detail for d in out)
    t_vertex = [d for d in _by(diags, "transformer", "not_bracketed") if "11,167" in d.detail]
    assert len(t_vertex) == 1 and "below the smallest size sampled (25,472)" in t_vertex[0].detail
    assert [d for d in _by(diags, "lstm", "not_bracketed") if "minimum N=45 " in d.detail]
    for fam, a_old in (("transformer", -0.44), ("lstm", 3.81)):
        assert not fits[fam].approach2.fitted and "approach2" not in fits[fam].predictions
        (refused,) = _by(diags, fam, "approach2_refused")
        assert refused.numbers["a_all_vertices"] == pytest.approx(a_old, abs=0.01)
        assert f"it would give a = {refused.numbers['a_all_vertices']:.3g}, which is not a result" \
            in refused.detail
        # Approach 3's E collapsed (1e-13, 1e-83): at its bound
        (e,) = [d for d in _by(diags, fam, "at_bound") if d.what == "approach3.E"]
        assert e.severity == D.WARNING and e.numbers["E"] < 1e-10
        # alpha's interval spans zero or orders of magnitude
        assert [d for d in diags if d.family == fam and d.what == "approach3.alpha"
                and d.code in ("interval_spans_zero", "interval_spans_orders")]
        # L(N) with a negative exponent
        assert [d.what for d in _by(diags, fam, "negative_exponent")] == ["L(N).alpha"]
        # Approach 2 (every vertex, as the old report had it) vs Approach 3 on a
        (dis,) = _by(diags, fam, "a_disagree")
        assert dis.numbers["a2"] == pytest.approx(a_old, abs=0.01)
    assert all(d.severity in (D.WARNING, D.INFO) for d in diags)


def test_plot_notes_count_unbracketed_budgets_in_one_line(demo):
    _, diags = demo
    notes = D.plot_notes(diags, "lstm", "approach2")
    assert notes[0] == "lstm: 4 budget(s) not bracketed (hollow): left out"
    assert "lstm: approach2: not fitted" in notes
    assert not [n for n in notes if "C=" in n and "not bracketed" in n]
