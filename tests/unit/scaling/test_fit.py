"""Scaling-law fitting (jaxlm.scaling.fit): recovery of known laws, interval coverage,
degenerate input."""

import numpy as np
import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling import fit as F
from scaling_helpers import isoflop_grid, law3, random_constants


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


# ------------------------------------------------------------------ bracketed IsoFLOP minima


def test_approach2_leaves_out_unbracketed_budgets_and_says_why():
    """The two largest budgets sampled only above their optimum (their lowest loss at the
    smallest size): left out of N_opt(C), each with the reason; a comes from the other three."""
    from jaxlm.scaling.approach2 import fmt_n

    rng = np.random.default_rng(12)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.002, shift=[0, 0, 0, 1.4, 1.4])
    f = F.fit_approach2(N, D, C, L, n_boot=20)
    budgets = sorted(f.budgets, key=lambda b: b.C)
    assert [b.bracketed for b in budgets] == [True, True, True, False, False]
    for b in budgets[3:]:
        assert b.excluded.startswith("not bracketed: the lowest loss is at the smallest size "
                                     f"sampled (N={fmt_n(min(b.N))})")
        assert b.best_N == min(b.N)
    assert all(b.excluded is None and min(b.N) < b.N_opt < max(b.N) for b in budgets[:3])
    assert f.fitted and f.n_bracketed == 3 and f.refused is None
    a_true = k["be"] / (k["al"] + k["be"])
    assert f.a.value == pytest.approx(a_true, abs=0.04)
    assert f.a_all_vertices is not None and abs(f.a_all_vertices - f.a.value) > 0.01
    doc = f.to_json()
    assert doc["n_bracketed"] == 3 and doc["a_all_vertices"] == f.a_all_vertices
    assert [b["bracketed"] for b in doc["budgets"]] == [True, True, True, False, False]


def test_approach2_refuses_with_fewer_than_two_bracketed_budgets():
    """One bracketed budget of three (one sampled above its optimum, one below): Approach 2 is
    not fitted -- a record that says why, not an error -- and fit_all makes no prediction."""
    rng = np.random.default_rng(13)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.002, budgets=np.geomspace(1e17, 1e19, 3),
                              shift=[0, 1.4, -1.4])
    f = F.fit_approach2(N, D, C, L, n_boot=10)
    assert not f.fitted and (f.a, f.k, f.b, f.k_D) == (None,) * 4 and f.n_bracketed == 1
    assert f.refused == ("1 of 3 IsoFLOP budgets have a minimum bracketed by the sampled "
                         "sizes (need 2)")
    largest = [b for b in f.budgets if not b.bracketed and b.best_N == max(b.N)]
    assert len(largest) == 1 and "the lowest loss is at the largest size" in largest[0].excluded
    doc = f.to_json()
    assert "a" not in doc and doc["refused"] == f.refused
    with pytest.raises(JaxlmError, match="Approach 2 was not fitted: 1 of 3"):
        F.approach2_predict(f, [1e21])
    fam = F.fit_all(N, D, C, L, n_boot=0)
    assert fam.approach2.refused == f.refused and "approach2" not in fam.predictions
    assert fam.skipped["approach2"] == f"N_opt(C) not fitted: {f.refused}"


@pytest.mark.parametrize("N, L, v, ok, why", [
    ([1, 2, 3, 4, 5], [3, 2, 1.5, 2, 3], np.log(3.1), True, None),
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], np.log(0.5), False, "smallest size sampled (N=1); the "
     "parabola's minimum N=0.5 lies below"),
    ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], np.nan, False, "largest size sampled (N=5); the "
     "parabola opens downward"),
    ([1, 2, 3, 4, 5], [3, 2, 1.5, 2, 3], np.log(7.0), False, "minimum N=7 lies above"),
    ([1, 1, 2, 3, 3], [9, 1, 2, 3, 3], np.log(2.0), True, None),  # mean loss per size: 5, 2, 3
], ids=["inside", "below", "no_minimum", "vertex_above", "replicates"])
def test_bracket(N, L, v, ok, why):
    from jaxlm.scaling.approach2 import bracket

    got_ok, best, got_why = bracket(np.asarray(N, float), np.asarray(L, float), v)
    assert got_ok is ok and (got_why is None if why is None else why in got_why)
    assert best == (2 if N[0] == N[1] else N[int(np.argmin(L))])


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
