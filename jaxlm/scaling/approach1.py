"""Chinchilla Approach 1 (the envelope of training curves), pure math (numpy).

Each size N contributes points (D, C, L): the losses of cooldown branches at several token
budgets, of separate runs, or periodic evals of one run. Per size the envelope is the running
minimum of L over C (a size's best loss with at most that compute), interpolated linearly in
log C - log L between its points and never extrapolated. At each budget of a log-spaced grid
over the sampled C, the sizes whose points span that budget compete; the one with the lowest
envelope is N_opt(C), and D_opt(C) = C over that size's FLOPs per token. As for Approach 2, a
minimum counts only when it is bracketed (a competing size on each side of the winner); then
N_opt = k C^a and D_opt = k_D C^b by log-log regression over the bracketed budgets (fewer
than 3 budgets or 2 distinct winners: not fitted, `refused` says why). Intervals: a bootstrap
resampling each size's points.

`curves` (jaxlm.scaling.curves) adds points from runs' periodic evals to the runs' final
losses; each grid point says whether its envelope value rests on such a point (`from_curve`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling.curves import CurveRun, Curves
from jaxlm.scaling.records import Estimate, Prediction, Record
from jaxlm.scaling.stats import (LEVEL, check_positive, estimate, group_by_tolerance, interval,
                                 one_blas_thread, safe_exp)


@dataclasses.dataclass(frozen=True)
class EnvelopePoint(Record):
    """One budget of the grid: the size with the lowest envelope there."""

    C: float
    N_opt: float
    D_opt: float
    loss: float
    n_sizes: int  # sizes whose points span C
    bracketed: bool  # a competing size on each side of N_opt
    from_curve: bool = False  # the winner's envelope there rests on a periodic eval

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Approach1Fit(Record):
    """N_opt = k C^a, D_opt = k_D C^b from the envelope minima (bracketed budgets only)."""

    FORM: ClassVar[str] = ("N_opt = k * C^a, D_opt = k_D * C^b (per budget, the size with the "
                           "lowest envelope of its loss curve; bracketed minima only)")

    a: Optional[Estimate]
    k: Optional[Estimate]
    b: Optional[Estimate]
    k_D: Optional[Estimate]
    points: tuple[EnvelopePoint, ...]
    n_sizes: int
    n_points: int  # (N, D, L) points the envelopes were made of
    boot: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)
    refused: Optional[str] = None
    n_curve_points: int = 0  # of n_points, from periodic evals (jaxlm.scaling.curves)
    curves: tuple[CurveRun, ...] = ()  # the runs whose eval curves gave them
    overshoot: Optional[float] = None  # the curves' rule for decaying schedules

    @property
    def fitted(self) -> bool:
        return self.a is not None

    @property
    def n_bracketed(self) -> int:
        return sum(p.bracketed for p in self.points)

    def _items(self) -> list[tuple[str, Any]]:
        items = [("form", self.FORM), ("n_sizes", self.n_sizes), ("n_points", self.n_points),
                 ("n_bracketed", self.n_bracketed)]
        items += [(k, getattr(self, k)) for k in ("a", "k", "b", "k_D")
                  if getattr(self, k) is not None]
        items += [("refused", self.refused)] if self.refused else []
        if self.curves:
            items += [("n_curve_points", self.n_curve_points), ("curve_overshoot", self.overshoot),
                      ("curves", list(self.curves))]
        return items + [("points", list(self.points))]


def _curves(N, D, C, L, src) -> list[tuple[float, float, np.ndarray, np.ndarray, np.ndarray]]:
    """Per size with points at 2 or more C: (N, FLOPs per token, log C sorted, log of the
    running-minimum loss, whether that minimum is a curve point (src: (n,) bool))."""
    out = []
    labels = group_by_tolerance(N, 0.01)
    for g in np.unique(labels):
        m = labels == g
        if np.unique(C[m]).size < 2:  # one point is no curve: it spans no range of C
            continue
        order = np.argsort(C[m], kind="stable")
        lc, raw = np.log(C[m][order]), np.log(L[m][order])
        ll = np.minimum.accumulate(raw)
        at = np.maximum.accumulate(np.where(raw <= ll, np.arange(raw.size), 0))  # argmin so far
        keep = np.concatenate([np.diff(lc) > 0, [True]])  # equal C: the last (lowest) loss
        out.append((float(np.exp(np.mean(np.log(N[m])))), float(np.median(C[m] / D[m])),
                    lc[keep], ll[keep], src[m][order][at][keep]))
    return sorted(out, key=lambda s: s[0])


def _rests_on(lc: float, xc: np.ndarray, fc: np.ndarray) -> bool:
    """Whether the envelope at log C = lc (interpolated between its neighbours in xc) rests on
    a curve point."""
    j = min(int(np.searchsorted(xc, lc - 1e-9)), xc.size - 1)
    if abs(xc[j] - lc) <= 1e-9 or j == 0:
        return bool(fc[j])
    return bool(fc[j - 1] or fc[j])


def _envelope(curves, grid: np.ndarray) -> list[EnvelopePoint]:
    points = []
    for lc in np.log(grid):
        cands = [(n, fpt, float(np.interp(lc, xc, yl)), _rests_on(lc, xc, fc))
                 for n, fpt, xc, yl, fc in curves if xc[0] - 1e-9 <= lc <= xc[-1] + 1e-9]
        if len(cands) < 2:
            continue
        j = int(np.argmin([c[2] for c in cands]))
        n, fpt, ll, fc = cands[j]
        points.append(EnvelopePoint(C=float(np.exp(lc)), N_opt=n, D_opt=float(np.exp(lc) / fpt),
                                    loss=float(np.exp(ll)), n_sizes=len(cands),
                                    bracketed=0 < j < len(cands) - 1, from_curve=fc))
    return points


def _regress(points: list[EnvelopePoint]) -> tuple[Optional[np.ndarray], Optional[str]]:
    """[a, log k, b, log k_D] over the bracketed points, or (None, why not)."""
    used = [p for p in points if p.bracketed]
    winners = {round(np.log(p.N_opt), 6) for p in used}
    if len(used) < 3 or len(winners) < 2:
        return None, (f"{len(used)} bracketed budget(s) with {len(winners)} distinct N_opt "
                      f"(need 3 and 2): the sizes do not bracket the envelope's minimum")
    lc = np.log([p.C for p in used])
    a, lk = np.polyfit(lc, np.log([p.N_opt for p in used]), 1)
    b, lkd = np.polyfit(lc, np.log([p.D_opt for p in used]), 1)
    return np.array([a, lk, b, lkd]), None


@one_blas_thread
def fit_approach1(N, D, C, L, n_grid: int = 32, n_boot: int = 200, level: float = LEVEL,
                  seed: int = 0, curves: Optional[Curves] = None) -> Approach1Fit:
    """Approach 1 on points (N, D, C, L), (n,) arrays, several per size (see the module
    docstring), and the points of `curves` (periodic evals); n_grid budgets log-spaced over the
    sampled C."""
    N, D = check_positive("params", N, 4), check_positive("tokens", D, 4)
    C, L = check_positive("flops", C, 4), check_positive("loss", L, 4)
    src = np.zeros(N.size, bool)
    if curves is not None and curves.n_points:
        N, D, C, L = (np.concatenate([a, check_positive(k, b, 1)]) for a, b, k in
                      ((N, curves.N, "params"), (D, curves.D, "tokens"), (C, curves.C, "flops"),
                       (L, curves.L, "loss")))
        src = np.concatenate([src, np.ones(curves.n_points, bool)])
    per_size = _curves(N, D, C, L, src)
    if len(per_size) < 3:
        raise JaxlmError(f"Approach 1 needs at least 3 sizes with points at 2 or more token "
                         f"budgets (a curve each); got {len(per_size)}")
    grid = np.geomspace(C.min(), C.max(), n_grid)
    points = _envelope(per_size, grid)
    p, refused = _regress(points)
    labels = group_by_tolerance(N, 0.01)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot if p is not None else 0):
        idx = np.concatenate([rng.choice(np.flatnonzero(labels == g), (labels == g).sum())
                              for g in np.unique(labels)])
        q, _ = _regress(_envelope(_curves(N[idx], D[idx], C[idx], L[idx], src[idx]), grid))
        if q is not None:
            boots.append(q)
    B = np.asarray(boots) if boots else None
    common = dict(points=tuple(points), n_sizes=len(per_size), n_points=int(N.size),
                  n_curve_points=int(src.sum()), curves=() if curves is None else curves.runs,
                  overshoot=None if curves is None else curves.overshoot)
    if p is None:
        return Approach1Fit(a=None, k=None, b=None, k_D=None, refused=refused, **common)
    col = (lambda j, f=lambda x: x: None if B is None else f(B[:, j]))  # noqa: E731
    return Approach1Fit(a=estimate(p[0], col(0), level),
                        k=estimate(np.exp(p[1]), col(1, safe_exp), level),
                        b=estimate(p[2], col(2), level),
                        k_D=estimate(np.exp(p[3]), col(3, safe_exp), level), boot=B, **common)


def approach1_predict(fit1: Approach1Fit, C, level: float = LEVEL) -> Prediction:
    """N_opt and D_opt at budgets C from k C^a and k_D C^b, with bootstrap intervals."""
    if not fit1.fitted:
        raise JaxlmError(f"Approach 1 was not fitted: {fit1.refused}")
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    lC = np.log(C)
    n, d = fit1.k.value * C ** fit1.a.value, fit1.k_D.value * C ** fit1.b.value
    B = fit1.boot
    if B is None or len(B) <= 1:
        return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist())
    nb, db = safe_exp(B[:, 1:2] + B[:, 0:1] * lC), safe_exp(B[:, 3:4] + B[:, 2:3] * lC)
    return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist(),
                      N_opt_interval=[interval(nb[:, j], level) for j in range(C.size)],
                      D_opt_interval=[interval(db[:, j], level) for j in range(C.size)])


def markdown(a1: Approach1Fit) -> list[str]:
    """report.md's Approach 1 section."""
    L = ["### Chinchilla Approach 1 (envelope of training curves)", "",
         f"{a1.n_points} points of {a1.n_sizes} sizes; {a1.n_bracketed} of {len(a1.points)} "
         "grid budgets bracketed (a competing size on each side of the winner)."]
    if a1.fitted:
        L[-1] += (f" N_opt = k C^a: a = {_fmt(a1.a)}, k = {_fmt(a1.k)}; D_opt = k_D C^b: "
                  f"b = {_fmt(a1.b)}.")
    else:
        L[-1] += f" **Not fitted**: {a1.refused}."
    L += _curve_lines(a1)
    L += ["", "| C | sizes competing | N_opt | D_opt | loss | from | used |",
          "|---|---|---|---|---|---|---|"]
    L += [f"| {p.C:.3g} | {p.n_sizes} | {p.N_opt:.3g} | {p.D_opt:.3g} | {p.loss:.4f} | "
          f"{'eval curve' if p.from_curve else 'final loss'} | "
          f"{'yes' if p.bracketed else 'no: not bracketed'} |" for p in a1.points]
    return L + [""]


def _curve_lines(a1: Approach1Fit) -> list[str]:
    """What the periodic evals gave, and the caveat of the rule that chose them."""
    if not a1.curves:
        return []
    runs = [r for r in a1.curves if r.used]
    L = ["", f"{a1.n_curve_points} of the {a1.n_points} points are periodic evals (metrics.jsonl) "
         f"of {len(runs)} of the {len(a1.curves)} runs read, the rest final losses (runs.csv). "
         "Used: every eval of a constant-lr run (the run up to that step is a shorter "
         "constant-lr run); of a cosine or linear run only evals at steps s with train.steps <= "
         f"{a1.overshoot:g} s (the lr had nearly decayed; such a point lies slightly above the "
         "loss of a run whose cycle ends at s, Chinchilla's 25% cycle-length tolerance); none of "
         "a wsd run (use its cooldown branches). The `from` column says which kind of point each "
         "budget's winner rests on."]
    differ = [r.name for r in runs if r.final_eval_batches is not None
              and r.eval_batches is not None and r.eval_batches != r.final_eval_batches]
    if differ:
        L += ["", f"Note: {len(differ)} run(s) (e.g. {differ[0]}) evaluated periodically on "
              "fewer batches than at the end (train.eval_batches vs final_eval_batches): their "
              "curve points are noisier and may differ from final losses by the eval subset."]
    return L


def _fmt(e: Estimate) -> str:
    iv = e.interval
    ok = iv is not None and all(np.isfinite(v) for v in iv)
    return f"{e.value:.4g}" + (f" [{iv[0]:.3g}, {iv[1]:.3g}]" if ok else "")


__all__ = ["markdown", "EnvelopePoint", "Approach1Fit", "fit_approach1", "approach1_predict"]
