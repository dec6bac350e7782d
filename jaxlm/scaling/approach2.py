"""Chinchilla Approach 2 (IsoFLOP profiles), pure math (numpy).

Rows are grouped into IsoFLOP budgets by C (or an explicit budget label); per budget a
parabola of L in log N gives N_opt; then N_opt = k * C^a and D_opt = k_D * C^b by log-log
regression over budgets. Intervals: a bootstrap resampling runs within each budget.

A budget's minimum counts only when the runs bracket it: the lowest (mean) loss is at a sampled
size with a sampled size on each side, and the parabola opens upward with its vertex strictly
inside the sampled sizes. The other budgets are left out of the N_opt(C) fit, each with the
reason (`IsoFlopBudget.excluded`); with fewer than two bracketed budgets Approach 2 is not
fitted (`Approach2Fit.refused`), and `a_all_vertices` keeps the exponent an unchecked fit of
every vertex would report, for the diagnostics to name it -- not a result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling import replicates
from jaxlm.scaling.records import Estimate, Prediction, Record
from jaxlm.scaling.stats import (LEVEL, check_positive, estimate, group_by_tolerance, interval,
                                 safe_exp)


@dataclasses.dataclass(frozen=True)
class IsoFlopBudget(Record):
    """One IsoFLOP budget: its runs, their parabola of loss in log N and its minimum (None when
    the parabola opens downward), whether the runs bracket it, and if not why it is left out of
    the N_opt(C) fit."""

    C: float  # geometric mean of the runs' C
    n_runs: int
    N_opt: Optional[float]  # the parabola's vertex, bracketed or not
    loss_at_N_opt: Optional[float]
    bracketed: bool
    best_N: float  # the sampled size with the lowest mean loss
    excluded: Optional[str]  # why it is left out of Approach 2 (None: used)
    parabola_in_log_N: list[float]  # polynomial coefficients, highest power first
    N: list[float]
    D: list[float]
    loss: list[float]
    residuals_loss: list[float]

    @property
    def n_sizes(self) -> int:
        return int(np.unique(np.round(np.log(self.N), 6)).size)

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Approach2Fit(Record):
    """N_opt = k * C^a and D_opt = k_D * C^b from the bracketed minima of the IsoFLOP parabolas.
    a, k, b, k_D are None when fewer than two budgets are bracketed (`refused` says so)."""

    FORM: ClassVar[str] = ("N_opt = k * C^a, D_opt = k_D * C^b (parabola of loss in log N per "
                           "budget; bracketed minima only)")

    a: Optional[Estimate]
    k: Optional[Estimate]
    b: Optional[Estimate]
    k_D: Optional[Estimate]
    budgets: tuple[IsoFlopBudget, ...]
    # (n_boot, 4) bootstrap samples of [a, log k, b, log k_D]; None without a bootstrap
    boot: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)
    note: Optional[str] = None  # e.g. groups of runs left out by fit_all
    refused: Optional[str] = None  # why N_opt(C) was not fitted
    # the exponent of every parabola vertex (unbracketed included), when it differs from `a`
    a_all_vertices: Optional[float] = None

    @property
    def n_budgets(self) -> int:
        return len(self.budgets)

    @property
    def n_bracketed(self) -> int:
        return sum(b.bracketed for b in self.budgets)

    @property
    def fitted(self) -> bool:
        return self.a is not None

    def _items(self) -> list[tuple[str, Any]]:
        items = [("form", self.FORM), ("n_budgets", self.n_budgets),
                 ("n_bracketed", self.n_bracketed)]
        items += [(k, getattr(self, k)) for k in ("a", "k", "b", "k_D", "refused",
                                                  "a_all_vertices")
                  if getattr(self, k) is not None]
        items.append(("budgets", self.budgets))
        return items + ([("note", self.note)] if self.note is not None else [])


def isoflop_budgets(C: np.ndarray, rtol: float = 0.25, budget=None) -> np.ndarray:
    """Budget label per row: the given labels (e.g. a `budget` column), else C grouped within a
    factor (1 + rtol) of its neighbours (measured FLOPs vary a little within a budget)."""
    if budget is not None:
        _, labels = np.unique(np.asarray(budget), return_inverse=True)
        return labels
    return group_by_tolerance(np.asarray(C, dtype=np.float64), rtol)


def _parabola_min(lN: np.ndarray, L: np.ndarray) -> tuple[float, np.ndarray]:
    c2, c1, c0 = np.polyfit(lN, L, 2)
    if c2 <= 0:
        return float("nan"), np.array([c2, c1, c0])
    return -c1 / (2 * c2), np.array([c2, c1, c0])


def fmt_n(n: float) -> str:
    """A parameter count for a sentence: 25,472; 45; 4.36e+12."""
    return f"{n:,.0f}" if 1 <= n < 1e9 else f"{n:.3g}"


def bracket(N: np.ndarray, L: np.ndarray, v: float) -> tuple[bool, float, Optional[str]]:
    """(bracketed, the sampled size with the lowest mean loss, why not) for one budget's runs
    (N, loss) and its parabola's vertex v (log N; NaN: no minimum)."""
    lN = np.log(N)
    sizes, first, inv = np.unique(np.round(lN, 6), return_index=True, return_inverse=True)
    mean = np.bincount(inv, weights=L) / np.bincount(inv)
    i = int(np.argmin(mean))
    lo, hi, best = (float(N[first[j]]) for j in (0, -1, i))
    why = []
    if i == 0:
        why.append(f"the lowest loss is at the smallest size sampled (N={fmt_n(lo)})")
    elif i == sizes.size - 1:
        why.append(f"the lowest loss is at the largest size sampled (N={fmt_n(hi)})")
    if not np.isfinite(v):
        why.append("the parabola opens downward (no minimum)")
    elif v <= np.log(lo):
        why.append(f"the parabola's minimum N={fmt_n(np.exp(v))} lies below the smallest size "
                   f"sampled ({fmt_n(lo)})")
    elif v >= np.log(hi):
        why.append(f"the parabola's minimum N={fmt_n(np.exp(v))} lies above the largest size "
                   f"sampled ({fmt_n(hi)})")
    return not why, best, "; ".join(why) or None


def _approach2_once(groups, lC, lN, lD, L):
    lnopt, ldopt, lcs = [], [], []
    for g in groups:
        v, _ = _parabola_min(lN[g], L[g])
        if not np.isfinite(v):
            continue
        sd, id_ = np.polyfit(lN[g], lD[g], 1)  # tokens along the budget, at N_opt
        lnopt.append(v)
        ldopt.append(id_ + sd * v)
        lcs.append(lC[g].mean())
    if len(lcs) < 2:
        return None
    lcs, lnopt, ldopt = map(np.asarray, (lcs, lnopt, ldopt))
    a, lk = np.polyfit(lcs, lnopt, 1)
    b, lkd = np.polyfit(lcs, ldopt, 1)
    return np.array([a, lk, b, lkd])


def _budget(g: np.ndarray, lC, lN, N, D, L) -> IsoFlopBudget:
    v, coef = _parabola_min(lN[g], L[g])
    ok, best, why = bracket(N[g], L[g], v)
    return IsoFlopBudget(
        C=float(np.exp(lC[g].mean())), n_runs=int(g.size),
        N_opt=float(np.exp(v)) if np.isfinite(v) else None,
        loss_at_N_opt=float(np.polyval(coef, v)) if np.isfinite(v) else None,
        bracketed=ok, best_N=best, excluded=None if ok else f"not bracketed: {why}",
        parabola_in_log_N=coef.tolist(), N=N[g].tolist(), D=D[g].tolist(), loss=L[g].tolist(),
        residuals_loss=(L[g] - np.polyval(coef, lN[g])).tolist())


def _all_vertices_exponent(budgets) -> Optional[float]:
    """The slope of log N_opt on log C over every budget with a vertex (unbracketed included)."""
    pts = [(b.C, b.N_opt) for b in budgets if b.N_opt is not None]
    if len(pts) < 2:
        return None
    return float(np.polyfit(*np.log(np.asarray(pts)).T, 1)[0])


def fit_approach2(N, D, C, L, rtol: float = 0.25, budget=None, n_boot: int = 200,
                  level: float = LEVEL, seed: int = 0, min_sizes: int = 3,
                  cells: Optional[np.ndarray] = None) -> Approach2Fit:
    """IsoFLOP profiles. Every budget must hold at least `min_sizes` distinct model sizes and
    there must be at least two budgets (JaxlmError otherwise). N_opt(C) is fitted to the
    bracketed budgets only; with fewer than two, it is not fitted (`refused` says why).
    Intervals: bootstrap resampling runs within each budget (with replicate `cells`: sizes,
    then seeds within each size)."""
    N = check_positive("params", N, 6)
    D, C, L = (check_positive(n, v, 6) for n, v in (("tokens", D), ("flops", C), ("loss", L)))
    labels = isoflop_budgets(C, rtol, budget)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    for g in groups:
        sizes = np.unique(np.round(np.log(N[g]), 6)).size
        if sizes < min_sizes:
            raise JaxlmError(f"IsoFLOP budget C~{np.exp(np.log(C[g]).mean()):.3g} has {sizes} "
                             f"model size(s); a parabola needs at least {min_sizes}")
    if len(groups) < 2:
        raise JaxlmError("Approach 2 needs at least two IsoFLOP budgets; found 1")
    lC, lN, lD = np.log(C), np.log(N), np.log(D)
    budgets = tuple(_budget(g, lC, lN, N, D, L) for g in groups)
    used = [g for g, b in zip(groups, budgets) if b.bracketed]
    a_all = _all_vertices_exponent(budgets) if len(used) < len(groups) else None
    p = _approach2_once(used, lC, lN, lD, L) if len(used) >= 2 else None
    if p is None:
        return Approach2Fit(a=None, k=None, b=None, k_D=None, budgets=budgets, a_all_vertices=a_all,
                            refused=f"{len(used)} of {len(groups)} IsoFLOP budgets have a "
                            "minimum bracketed by the sampled sizes (need 2)")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        gs = [replicates.resample(rng, g, cells) for g in used]
        if any(np.unique(lN[g]).size < 3 for g in gs):
            continue
        q = _approach2_once(gs, lC, lN, lD, L)
        if q is not None:
            boots.append(q)
    B = np.asarray(boots).reshape(-1, 4) if boots else None
    col = (lambda i, f=lambda v: v: None if B is None else f(B[:, i]))
    return Approach2Fit(
        a=estimate(p[0], col(0), level),
        # a degenerate bootstrap resample can put log k past float range: inf, not a warning
        k=estimate(np.exp(p[1]), col(1, safe_exp), level),
        b=estimate(p[2], col(2), level),
        k_D=estimate(np.exp(p[3]), col(3, safe_exp), level),
        budgets=budgets, boot=B, a_all_vertices=a_all)


def approach2_predict(fit2: Approach2Fit, C, level: float = LEVEL) -> Prediction:
    """N_opt and D_opt at budgets C from the fitted k C^a and k_D C^b, with bootstrap
    intervals when the fit has them (JaxlmError for a fit that was refused)."""
    if not fit2.fitted:
        raise JaxlmError(f"Approach 2 was not fitted: {fit2.refused}")
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    lC = np.log(C)
    n = fit2.k.value * C ** fit2.a.value
    d = fit2.k_D.value * C ** fit2.b.value
    B = fit2.boot
    if B is None or len(B) <= 1:
        return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist())
    nb = safe_exp(B[:, 1:2] + B[:, 0:1] * lC)
    db = safe_exp(B[:, 3:4] + B[:, 2:3] * lC)
    return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist(),
                      N_opt_interval=[interval(nb[:, j], level) for j in range(C.size)],
                      D_opt_interval=[interval(db[:, j], level) for j in range(C.size)])


__all__ = ["IsoFlopBudget", "Approach2Fit", "isoflop_budgets", "fit_approach2",
           "approach2_predict", "bracket", "fmt_n"]
