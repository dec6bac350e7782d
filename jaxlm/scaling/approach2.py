"""Chinchilla Approach 2 (IsoFLOP profiles), pure math (numpy).

Rows are grouped into IsoFLOP budgets by C (or an explicit budget label); per budget a
parabola of L in log N gives N_opt; then N_opt = k * C^a and D_opt = k_D * C^b by log-log
regression over budgets. Intervals: a bootstrap resampling runs within each budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling.records import Estimate, Prediction, Record
from jaxlm.scaling.stats import (LEVEL, check_positive, estimate, group_by_tolerance, interval,
                                 safe_exp)


@dataclasses.dataclass(frozen=True)
class IsoFlopBudget(Record):
    """One IsoFLOP budget: its runs, their parabola of loss in log N and its minimum (None when
    the parabola opens downward)."""

    C: float  # geometric mean of the runs' C
    n_runs: int
    N_opt: Optional[float]
    loss_at_N_opt: Optional[float]
    parabola_in_log_N: list[float]  # polynomial coefficients, highest power first
    N: list[float]
    D: list[float]
    loss: list[float]
    residuals_loss: list[float]

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Approach2Fit(Record):
    """N_opt = k * C^a and D_opt = k_D * C^b from the minima of the IsoFLOP parabolas."""

    FORM: ClassVar[str] = ("N_opt = k * C^a, D_opt = k_D * C^b (parabola of loss in log N per "
                           "budget)")

    a: Estimate
    k: Estimate
    b: Estimate
    k_D: Estimate
    budgets: tuple[IsoFlopBudget, ...]
    # (n_boot, 4) bootstrap samples of [a, log k, b, log k_D]; None without a bootstrap
    boot: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)
    note: Optional[str] = None  # e.g. groups of runs left out by fit_all

    @property
    def n_budgets(self) -> int:
        return len(self.budgets)

    def _items(self) -> list[tuple[str, Any]]:
        items = [("form", self.FORM), ("n_budgets", self.n_budgets), ("a", self.a),
                 ("k", self.k), ("b", self.b), ("k_D", self.k_D), ("budgets", self.budgets)]
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
    return IsoFlopBudget(
        C=float(np.exp(lC[g].mean())), n_runs=int(g.size),
        N_opt=float(np.exp(v)) if np.isfinite(v) else None,
        loss_at_N_opt=float(np.polyval(coef, v)) if np.isfinite(v) else None,
        parabola_in_log_N=coef.tolist(), N=N[g].tolist(), D=D[g].tolist(), loss=L[g].tolist(),
        residuals_loss=(L[g] - np.polyval(coef, lN[g])).tolist())


def fit_approach2(N, D, C, L, rtol: float = 0.25, budget=None, n_boot: int = 200,
                  level: float = LEVEL, seed: int = 0, min_sizes: int = 3) -> Approach2Fit:
    """IsoFLOP profiles. Every budget must hold at least `min_sizes` distinct model sizes and
    there must be at least two budgets (JaxlmError otherwise). Intervals: bootstrap resampling
    runs within each budget."""
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
    p = _approach2_once(groups, lC, lN, lD, L)
    if p is None:
        raise JaxlmError("Approach 2: fewer than two IsoFLOP budgets have a minimum inside "
                         "their range of sizes (the parabolas open downward)")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        gs = [g[rng.integers(0, g.size, g.size)] for g in groups]
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
        budgets=tuple(_budget(g, lC, lN, N, D, L) for g in groups), boot=B)


def approach2_predict(fit2: Approach2Fit, C, level: float = LEVEL) -> Prediction:
    """N_opt and D_opt at budgets C from the fitted k C^a and k_D C^b, with bootstrap
    intervals when the fit has them."""
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
           "approach2_predict"]
