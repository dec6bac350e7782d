"""Scaling-law fitting: pure math on arrays, no I/O (numpy + scipy).

Conventions: N = non-embedding parameters, D = training tokens, C = training FLOPs, L = loss
(nats/token). Every fit returns a typed record (jaxlm.scaling.records): each constant an
`Estimate` (value and percentile-bootstrap interval at `level`), plus the residuals of
log-loss at the fitted values; `to_json()` gives the record's fit.json content.

- `fit_power_law(x, L)`: Kaplan-style L(x) = E + A / x^alpha (E = 0 with irreducible=False),
  least squares on log-loss. Used for L(N), L(D) and the compute frontier L(C).
- `fit_approach2(N, D, C, L)` (approach2.py): Chinchilla Approach 2. Rows are grouped into
  IsoFLOP budgets by C (or an explicit budget label); per budget a parabola of L in log N gives
  N_opt; then N_opt = k * C^a and D_opt = k_D * C^b by log-log regression over the budgets
  whose minimum the sampled sizes bracket (fewer than two: not fitted, `refused` says why).
- `fit_approach3(N, D, L)` (approach3.py): Chinchilla Approach 3, L = E + A/N^alpha +
  B/D^beta, by the Huber loss (delta = 1e-3) on log L - LSE(a - alpha log N, b - beta log D,
  e), L-BFGS from a grid of initial values (Hoffmann et al. 2022; Besiroglu et al. 2024), with
  analytic gradients.
- `predict(fit3, C)`: compute-optimal N, D and loss for budgets C (C = 6 N D), with intervals.
- `fit_all(N, D, C, L)`: all of them for one family's runs (a `FamilyFit`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
from scipy.optimize import least_squares

from jaxlm.errors import JaxlmError
from jaxlm.scaling.approach1 import Approach1Fit, approach1_predict, fit_approach1
from jaxlm.scaling.approach2 import (Approach2Fit, IsoFlopBudget, approach2_predict,
                                     fit_approach2, isoflop_budgets)
from jaxlm.scaling.approach3 import (GRID, Approach3Fit, HoldoutCheck, approach3_eval,
                                     approach3_objective, fit_approach3, holdout_check, predict)
from jaxlm.scaling import replicates
from jaxlm.scaling.records import Estimate, Prediction, Record, to_json
from jaxlm.scaling.stats import (LEVEL, best_per_group, check_positive, compute_frontier,
                                 estimate, group_by_tolerance, one_blas_thread, safe_exp)

# ---------------------------------------------------------------- Kaplan-style power laws


@dataclasses.dataclass(frozen=True)
class PowerLawFit(Record):
    """L(x) = E + A / x^alpha; without the irreducible term (E None) the Kaplan form
    (x_c / x)^alpha with x_c = A^(1/alpha)."""

    name: str  # the variable: N, D, C (or x); x_c is the JSON key "{name}_c"
    A: Estimate
    alpha: Estimate
    x_c: Estimate
    E: Optional[Estimate]  # None: fitted as a pure power law
    x: list[float]
    loss: list[float]
    residuals_log_loss: list[float]
    rmse_log_loss: float
    index: Optional[list[int]] = None  # the rows of a family's runs fitted (set by fit_all)
    # bootstrap samples (n_boot, 3) of (log A, alpha, log E) (log E = -inf: no E); not JSON
    boot: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def n_points(self) -> int:
        return len(self.x)

    @property
    def form(self) -> str:
        n = self.name
        if self.E is not None:
            return f"L({n}) = E + A / {n}^alpha"
        return f"L({n}) = A / {n}^alpha = ({n}_c / {n})^alpha"

    def _items(self) -> list[tuple[str, Any]]:
        items = [("form", self.form), ("n_points", self.n_points), ("A", self.A),
                 ("alpha", self.alpha), (f"{self.name}_c", self.x_c), ("x", self.x),
                 ("loss", self.loss), ("residuals_log_loss", self.residuals_log_loss),
                 ("rmse_log_loss", self.rmse_log_loss)]
        items += [("E", self.E)] if self.E is not None else []
        return items + ([("index", self.index)] if self.index is not None else [])


def _power_law_once(lx: np.ndarray, ll: np.ndarray, irreducible: bool, x0=None) -> np.ndarray:
    """Returns (a, alpha, e): log L ~ LSE(a - alpha lx, e); e = -inf without the E term."""
    slope, icept = np.polyfit(lx, ll, 1)
    if not irreducible:
        return np.array([icept, -slope, -np.inf])

    def resid(p):
        a, alpha, e = p
        z1, z2 = a - alpha * lx, np.full_like(lx, e)
        m = np.maximum(z1, z2)
        w1, w2 = np.exp(z1 - m), np.exp(z2 - m)
        s = w1 + w2
        r = m + np.log(s) - ll
        J = np.stack([w1 / s, -lx * w1 / s, w2 / s], axis=1)
        return r, J

    best, starts = None, [] if x0 is None else [x0]
    if x0 is None:  # a few starts: E at fractions of the smallest loss
        for frac in (0.2, 0.5, 0.8, 0.95):
            e0 = ll.min() + np.log(frac)
            rest = np.log(np.maximum(np.exp(ll) - np.exp(e0), 1e-12))
            s2, i2 = np.polyfit(lx, rest, 1)
            starts.append(np.array([i2, max(-s2, 1e-3), e0]))
    for x0 in starts:
        sol = least_squares(lambda p: resid(p)[0], x0, jac=lambda p: resid(p)[1],
                            method="lm", xtol=1e-12, ftol=1e-12, max_nfev=2000)
        if best is None or sol.cost < best.cost:
            best = sol
    return best.x


@one_blas_thread
def fit_power_law(x, L, irreducible: bool = True, n_boot: int = 200, level: float = LEVEL,
                  seed: int = 0, name: str = "x",
                  reps: Optional[Sequence[np.ndarray]] = None) -> PowerLawFit:
    """L(x) = E + A / x^alpha (Kaplan form (x_c / x)^alpha with x_c = A^(1/alpha) when E = 0),
    least squares on log L. Intervals: bootstrap over points; with `reps` (per point, the
    losses of its seeds, whose mean is L) over points, then seeds within each point."""
    x = check_positive(name, x, 4 if irreducible else 3)
    L = check_positive("loss", L, 4 if irreducible else 3)
    lx, ll = np.log(x), np.log(L)
    p = _power_law_once(lx, ll, irreducible)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, x.size)
        if np.unique(lx[idx]).size < 3:
            continue
        lb = (ll[idx] if reps is None
              else np.log(replicates.resampled_means(rng, reps, idx)))
        boots.append(_power_law_once(lx[idx], lb, irreducible,
                                     p if irreducible and np.isfinite(p[2]) else None))
    B = np.asarray(boots).reshape(-1, 3) if boots else None
    A, alpha, E = np.exp(p[0]), p[1], np.exp(p[2])
    pred = np.log(E + A * x ** -alpha)
    return PowerLawFit(
        name=name,
        A=estimate(A, None if B is None else safe_exp(B[:, 0]), level),
        alpha=estimate(alpha, None if B is None else B[:, 1], level),
        x_c=estimate(A ** (1 / alpha), None if B is None else safe_exp(B[:, 0] / B[:, 1]), level),
        E=estimate(E, None if B is None else safe_exp(B[:, 2]), level) if irreducible else None,
        x=x.tolist(), loss=L.tolist(), residuals_log_loss=(ll - pred).tolist(),
        rmse_log_loss=float(np.sqrt(np.mean((ll - pred) ** 2))), boot=B)


def power_law_eval(fit: PowerLawFit, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    E = fit.E.value if fit.E is not None else 0.0
    return E + fit.A.value * x ** -fit.alpha.value


# ---------------------------------------------------------------- everything for one family


@dataclasses.dataclass(frozen=True)
class FamilyFit(Record):
    """Every fit on one family's runs; sub-fits the data cannot support are in `skipped`
    (name -> why)."""

    n_points: int
    power_laws: dict[str, PowerLawFit]  # "L(N)", "L(D)", "L(C)": those fitted
    approach3: Approach3Fit
    predictions: dict[str, Prediction]  # "approach3", "approach2", "L(C)": those made
    approach2: Optional[Approach2Fit] = None
    holdout: Optional[HoldoutCheck] = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    approach1: Optional[Approach1Fit] = None
    tuning: Optional[Record] = None  # jaxlm.scaling.tuning.Tuning: hp axes, best per (N, D)
    seed_noise: Optional[replicates.SeedNoise] = None  # replicate seeds: loss across seeds
    holdout_runs: Optional[Record] = None  # holdout_runs.HoldoutRuns: role-holdout rows predicted

    def _items(self) -> list[tuple[str, Any]]:
        items = [("n_points", self.n_points), ("skipped", self.skipped),
                 *self.power_laws.items()]
        items += [("approach1", self.approach1)] if self.approach1 is not None else []
        items += [("approach2", self.approach2)] if self.approach2 is not None else []
        items += [("approach3", self.approach3), ("predictions", self.predictions)]
        items += [("tuning", self.tuning)] if self.tuning is not None else []
        items += [("seed_noise", self.seed_noise)] if self.seed_noise is not None else []
        items += [("holdout", self.holdout)] if self.holdout is not None else []
        return items + ([("holdout_runs", self.holdout_runs)] if self.holdout_runs else [])


def _approach2_for_family(N, D, C, L, budget, approach2: str, budget_rtol: float, n_boot: int,
                          level: float, seed: int,
                          cells=None) -> tuple[Optional[Approach2Fit], str]:
    """fit_all's Approach 2: (the fit, None) or (None, why it was skipped)."""
    labels = isoflop_budgets(C, budget_rtol, budget)
    ok = np.zeros(N.size, bool)
    for g in np.unique(labels):
        m = labels == g
        # a budget: >= 3 sizes, and (found by grouping) C within a factor (1 + rtol)^2, so
        # that a continuum of C (not an IsoFLOP sweep) is not taken for one budget
        tight = budget is not None or C[m].max() <= C[m].min() * (1 + budget_rtol) ** 2
        ok |= m & tight & (np.unique(np.round(np.log(N[m]), 6)).size >= 3)
    n_ok = np.unique(labels[ok]).size
    if approach2 == "yes":
        return fit_approach2(N, D, C, L, budget_rtol, budget, n_boot, level, seed,
                             cells=cells), None
    if n_ok < 2:
        return None, (f"{n_ok} IsoFLOP budget(s) with at least 3 sizes and one compute budget "
                      "(need 2): not an IsoFLOP sweep")
    try:
        fit2 = fit_approach2(N[ok], D[ok], C[ok], L[ok], budget_rtol,
                             None if budget is None else np.asarray(budget)[ok], n_boot, level,
                             seed, cells=None if cells is None else cells[ok])
    except JaxlmError as e:
        return None, str(e)
    dropped = np.unique(labels).size - n_ok
    if dropped:
        fit2 = dataclasses.replace(fit2, note=f"{dropped} group(s) of runs left out (fewer "
                                   "than 3 sizes, or C spread too wide)")
    return fit2, None


def _power_laws(N, D, C, L, cells, skipped: dict, irreducible: bool, n_boot: int,
                level: float, seed: int) -> dict[str, PowerLawFit]:
    """L(N) and L(D) (the best point per N, per D) and L(C) (the compute frontier); with
    replicate cells, over the cells' mean losses, each point resampled over its seeds. A
    fit's `index` is its rows in the runs (a cell: its first run)."""
    rows, reps = np.arange(N.size), None
    if cells is not None:
        rows = np.asarray([np.flatnonzero(cells == c)[0] for c in np.unique(cells)])
        reps = [L[cells == c] for c in np.unique(cells)]
        N, D, C, L = replicates.cell_means(cells, N, D, C, L)
    laws: dict[str, PowerLawFit] = {}
    for key, x, idx in (("L(N)", N, best_per_group(N, L)), ("L(D)", D, best_per_group(D, L)),
                        ("L(C)", C, compute_frontier(C, L))):
        if idx.size < 3:
            skipped[key] = (f"the compute frontier has {idx.size} point(s); need 3"
                            if key == "L(C)" else
                            f"{idx.size} distinct point(s); a power law needs at least 3")
            continue
        fit = fit_power_law(x[idx], L[idx], irreducible=irreducible and idx.size >= 4,
                            n_boot=n_boot, level=level, seed=seed, name=key[2],
                            reps=None if reps is None else [reps[i] for i in idx])
        laws[key] = dataclasses.replace(fit, index=rows[idx].tolist())
    return laws


@one_blas_thread
def fit_all(N, D, C, L, budget=None, irreducible: bool = True, approach2: str = "auto",
            budget_rtol: float = 0.25, predict_at: Sequence[float] = (), holdout: float = 0.2,
            n_boot: int = 200, level: float = LEVEL, seed: int = 0,
            delta: float = 1e-3, replicate=None, curves=None) -> FamilyFit:
    """Every fit on one family's runs. N, D, C, L: (n,) arrays (C may be measured FLOPs, which
    include attention; D = tokens). approach2: "auto" (run on the budgets holding >= 3 sizes when
    at least two do, else skip with a note), "yes" (every budget must qualify: JaxlmError
    otherwise) or "no". Sub-fits the data cannot support are reported under `skipped`.
    replicate: (n,) seed per run (NaN: unknown); runs of one (N, D) and different seeds are
    replicates: the power laws fit each (N, D)'s mean loss, every bootstrap resamples (N, D)
    cells then seeds (jaxlm.scaling.replicates), and the seed noise is reported.
    curves: a jaxlm.scaling.curves.Curves, periodic evals given to Approach 1 only."""
    N = check_positive("params", N, 8)
    D, C, L = (check_positive(n, v, 8) for n, v in (("tokens", D), ("flops", C), ("loss", L)))
    if approach2 not in ("auto", "yes", "no"):
        raise JaxlmError(f"approach2 must be auto, yes or no, not {approach2!r}")
    skipped: dict[str, str] = {}
    cells = replicates.cells(N, D, replicate)
    laws = _power_laws(N, D, C, L, cells, skipped, irreducible, n_boot, level, seed)
    fit2 = None
    if approach2 != "no":
        fit2, why = _approach2_for_family(N, D, C, L, budget, approach2, budget_rtol, n_boot,
                                          level, seed, cells)
        if why is not None:
            skipped["approach2"] = why
        elif not fit2.fitted:
            skipped["approach2"] = f"N_opt(C) not fitted: {fit2.refused}"

    fit1 = None
    try:
        fit1 = fit_approach1(N, D, C, L, n_boot=n_boot, level=level, seed=seed, curves=curves)
        if not fit1.fitted:
            skipped["approach1"] = f"N_opt(C) not fitted: {fit1.refused}"
    except JaxlmError as e:
        skipped["approach1"] = str(e)
    fit3 = fit_approach3(N, D, L, delta=delta, n_boot=n_boot, level=level, seed=seed,
                         cells=cells)
    cs = sorted(set([float(C.max()), float(C.max()) * 10, float(C.max()) * 100,
                     *map(float, predict_at)]))
    predictions = {"approach3": predict(fit3, cs, level)}
    if fit2 is not None and fit2.fitted:
        predictions["approach2"] = approach2_predict(fit2, cs, level)
    if fit1 is not None and fit1.fitted:
        predictions["approach1"] = approach1_predict(fit1, cs, level)
    if "L(C)" in laws:
        predictions["L(C)"] = Prediction(C=cs, loss=power_law_eval(laws["L(C)"], cs).tolist())
    check = None
    if holdout > 0 and N.size * (1 - holdout) >= 10:
        check = holdout_check(N, D, L, C, holdout, n_boot // 4, level, seed, delta)
    else:
        skipped["holdout"] = "too few runs to hold some out (need 10 left to fit)"
    return FamilyFit(n_points=int(N.size), power_laws=laws, approach3=fit3,
                     predictions=predictions, approach2=fit2, holdout=check, skipped=skipped,
                     approach1=fit1, seed_noise=None if cells is None else
                     replicates.seed_noise(N, D, L, cells))


def strip_private(obj):
    """JSON-ready Python values (see records.to_json): records through their to_json(),
    `_`-prefixed dict keys dropped, numpy values to Python ones, NaN and inf to None."""
    return to_json(obj)


__all__ = ["fit_approach1", "approach1_predict", "Approach1Fit", "fit_power_law", "power_law_eval", "compute_frontier", "best_per_group",
           "isoflop_budgets", "fit_approach2", "approach2_predict", "fit_approach3",
           "approach3_eval", "predict", "holdout_check", "check_positive", "strip_private",
           "group_by_tolerance", "fit_all", "GRID", "LEVEL", "approach3_objective",
           "Estimate", "Prediction", "PowerLawFit", "IsoFlopBudget", "Approach2Fit",
           "Approach3Fit", "HoldoutCheck", "FamilyFit", "to_json"]
