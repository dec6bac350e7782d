"""Chinchilla Approach 3, pure math (numpy + scipy): L(N, D) = E + A/N^alpha + B/D^beta.

Fitted by the Huber loss (delta = 1e-3) on log L - LSE(a - alpha log N, b - beta log D, e),
L-BFGS from a grid of initial values (Hoffmann et al. 2022; Besiroglu et al. 2024), with
analytic gradients. `predict` gives the compute-optimal N, D and loss for budgets C = 6 N D;
`holdout_check` fits without the largest-compute runs and predicts them.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Optional

import numpy as np
from scipy.optimize import minimize

from jaxlm.scaling import replicates
from jaxlm.scaling.records import Estimate, Prediction, Record
from jaxlm.scaling.stats import LEVEL, check_positive, estimate, interval, one_blas_thread

# Initial-value grid of Besiroglu et al. 2024 (after Hoffmann et al. 2022): theta = (a, b, e,
# alpha, beta) with A = exp(a), B = exp(b), E = exp(e).
GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))), dtype=np.float64)
CONSTANTS = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class Approach3Fit(Record):
    """L(N, D) = E + A / N^alpha + B / D^beta, and the compute-optimal exponents
    a = beta/(alpha+beta) (N_opt ~ C^a), b = alpha/(alpha+beta) (D_opt ~ C^b)."""

    FORM: ClassVar[str] = "L(N, D) = E + A / N^alpha + B / D^beta"

    E: Estimate
    A: Estimate
    B: Estimate
    alpha: Estimate
    beta: Estimate
    a: Estimate
    b: Estimate
    huber_delta: float
    objective: float  # the Huber objective at the fit (mean Huber / delta)
    N: list[float]
    D: list[float]
    loss: list[float]
    residuals_log_loss: list[float]
    rmse_log_loss: float
    # the fit as theta = (log A, log B, log E, alpha, beta), and bootstrap samples (n_boot, 5)
    theta: np.ndarray = dataclasses.field(compare=False, repr=False)
    boot: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def n_points(self) -> int:
        return len(self.N)

    def _items(self) -> list[tuple[str, Any]]:
        return [("form", self.FORM), ("n_points", self.n_points),
                ("huber_delta", self.huber_delta), ("objective", self.objective),
                *[(k, getattr(self, k)) for k in (*CONSTANTS, "a", "b")],
                ("N", self.N), ("D", self.D), ("loss", self.loss),
                ("residuals_log_loss", self.residuals_log_loss),
                ("rmse_log_loss", self.rmse_log_loss)]


@dataclasses.dataclass(frozen=True)
class HoldoutCheck(Record):
    """Approach 3 fitted on all but the highest-compute runs, against those runs."""

    n_train: int
    held_out_index: list[int]
    N: list[float]
    D: list[float]
    C: list[float]
    loss: list[float]
    predicted: list[float]
    relative_error: list[float]
    fit: Approach3Fit  # the fit without the held-out runs (its constants are in the JSON)
    predicted_interval: Optional[list[list[float]]] = None

    def _items(self) -> list[tuple[str, Any]]:
        items = [(k, getattr(self, k)) for k in ("n_train", "held_out_index", "N", "D", "C",
                                                 "loss", "predicted", "relative_error")]
        if self.predicted_interval is not None:
            items.append(("predicted_interval", self.predicted_interval))
        return items + [("fit", {k: getattr(self.fit, k) for k in CONSTANTS})]


# ---------------------------------------------------------------- the objective and L-BFGS


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def approach3_objective(theta: np.ndarray, lN, lD, lL, delta: float, weights=None):
    """(value, gradient) of sum_i w_i Huber_delta(LSE_i - log L_i) / (n delta); theta (5,)."""
    a, b, e, al, be = theta
    z = np.stack([a - al * lN, b - be * lD, np.full_like(lN, e)])
    m = z.max(0)
    w = np.exp(z - m)
    s = w.sum(0)
    r = m + np.log(s) - lL
    p = w / s
    wt = np.ones_like(lN) if weights is None else weights
    scale = 1.0 / (lN.size * delta)
    dr = np.clip(r, -delta, delta) * wt * scale  # Huber'(r)
    g = np.array([dr @ p[0], dr @ p[1], dr @ p[2], -(dr * lN) @ p[0], -(dr * lD) @ p[1]])
    return float(_huber(r, delta) @ wt * scale), g


def _objective_batch(thetas: np.ndarray, lN, lD, lL, delta: float) -> np.ndarray:
    """Objective at many theta (K, 5) at once (for ranking the grid)."""
    a, b, e, al, be = (thetas[:, i:i + 1] for i in range(5))
    z1, z2 = a - al * lN, b - be * lD
    z3 = np.broadcast_to(e, z1.shape)
    m = np.maximum(np.maximum(z1, z2), z3)
    r = m + np.log(np.exp(z1 - m) + np.exp(z2 - m) + np.exp(z3 - m)) - lL
    return _huber(r, delta).sum(1) / (lN.size * delta)


def _lbfgs(theta0, lN, lD, lL, delta, weights=None, ftol=1e-15, gtol=1e-11):
    """L-BFGS in centred coordinates (a - alpha mean(log N), b - beta mean(log D), ...), which
    removes most of the a-alpha and b-beta correlation and cuts the iterations several-fold."""
    mN, mD = lN.mean(), lD.mean()
    lNc, lDc = lN - mN, lD - mD
    t0 = np.array(theta0, dtype=np.float64)
    t0[0] -= t0[3] * mN
    t0[1] -= t0[4] * mD
    res = minimize(approach3_objective, t0, args=(lNc, lDc, lL, delta, weights), jac=True,
                   method="L-BFGS-B",
                   options={"maxiter": 10000, "maxfun": 20000, "ftol": ftol, "gtol": gtol})
    x = res.x.copy()
    x[0] += x[3] * mN
    x[1] += x[4] * mD
    return x, res.fun


def _fit3_once(lN, lD, lL, delta, starts: np.ndarray, weights=None):
    best_x, best_f = None, np.inf
    for t0 in starts:
        x, f = _lbfgs(t0, lN, lD, lL, delta, weights)
        if f < best_f:
            best_x, best_f = x, f
    return best_x, best_f


# ---------------------------------------------------------------- fitting and predicting


@one_blas_thread
def fit_approach3(N, D, L, delta: float = 1e-3, n_boot: int = 200, level: float = LEVEL,
                  seed: int = 0, n_starts: int = 8, grid: Optional[np.ndarray] = None,
                  cells: Optional[np.ndarray] = None) -> Approach3Fit:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al.'s Approach 3).

    The whole initial-value grid (default: Besiroglu et al.'s 6*6*5*5*5 = 4,500 points) is
    scored in one vectorized pass and L-BFGS runs from the `n_starts` best of them; the fit is
    the lowest objective reached. Intervals: a bootstrap over points; each resample's L-BFGS
    starts from the full-data optimum; with replicate `cells` (jaxlm.scaling.replicates) it
    resamples (N, D) cells, then seeds within each. Returns the constants, the `alpha/(alpha+beta)`
    exponents of the compute-optimal allocation, residuals of log L and the bootstrap samples
    (`boot`)."""
    N = check_positive("params", N, 8)
    D, L = check_positive("tokens", D, 8), check_positive("loss", L, 8)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    grid = GRID if grid is None else np.asarray(grid, dtype=np.float64)
    scores = _objective_batch(grid, lN, lD, lL, delta)
    starts = grid[np.argsort(scores)[:n_starts]]
    theta, fval = _fit3_once(lN, lD, lL, delta, starts)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        # Bootstrap weights = counts of each point in a resample (same objective, no copies).
        w = np.bincount(replicates.resample(rng, np.arange(N.size), cells),
                        minlength=N.size).astype(np.float64)
        boots.append(_lbfgs(theta, lN, lD, lL, delta, w, ftol=1e-12, gtol=1e-9)[0])
    T = np.asarray(boots).reshape(-1, 5) if boots else None
    return _approach3_result(theta, fval, T, N, D, L, delta, level)


def _approach3_result(theta, fval, T, N, D, L, delta, level) -> Approach3Fit:
    a, b, e, al, be = theta
    pred = np.logaddexp(np.logaddexp(a - al * np.log(N), b - be * np.log(D)), e)
    res = np.log(L) - pred
    col = (lambda i, f=lambda v: v: None if T is None else f(T[:, i]))
    return Approach3Fit(
        E=estimate(np.exp(e), col(2, np.exp), level),
        A=estimate(np.exp(a), col(0, np.exp), level),
        B=estimate(np.exp(b), col(1, np.exp), level),
        alpha=estimate(al, col(3), level),
        beta=estimate(be, col(4), level),
        # compute-optimal allocation with C = 6 N D: N_opt ~ C^a, D_opt ~ C^b
        a=estimate(be / (al + be), None if T is None else T[:, 4] / (T[:, 3] + T[:, 4]), level),
        b=estimate(al / (al + be), None if T is None else T[:, 3] / (T[:, 3] + T[:, 4]), level),
        huber_delta=delta, objective=float(fval),
        N=N.tolist(), D=D.tolist(), loss=L.tolist(), residuals_log_loss=res.tolist(),
        rmse_log_loss=float(np.sqrt(np.mean(res ** 2))), theta=np.asarray(theta), boot=T)


def approach3_eval(theta: np.ndarray, N, D) -> np.ndarray:
    """Loss predicted by theta = (a, b, e, alpha, beta); theta may be (K, 5) -> (K, n)."""
    t = np.atleast_2d(theta)
    lN, lD = np.log(np.asarray(N, np.float64)), np.log(np.asarray(D, np.float64))
    a, b, e, al, be = (t[:, i:i + 1] for i in range(5))
    out = np.exp(a - al * lN) + np.exp(b - be * lD) + np.exp(e)
    return out[0] if np.ndim(theta) == 1 else out


def _optimal_nd(theta: np.ndarray, C: np.ndarray):
    """Compute-optimal (N, D, loss) for C = 6 N D; theta (K, 5), C (m,) -> (K, m) each."""
    a, b, e, al, be = (theta[:, i:i + 1] for i in range(5))
    # minimize A N^-al + B (C/6N)^-be: N_opt = G (C/6)^(be/(al+be)), G = (al A / (be B))^(1/(al+be))
    lG = (np.log(al) + a - np.log(be) - b) / (al + be)
    lN = lG + be / (al + be) * np.log(C / 6.0)
    lD = np.log(C / 6.0) - lN
    loss = np.exp(a - al * lN) + np.exp(b - be * lD) + np.exp(e)
    return np.exp(lN), np.exp(lD), loss


optimal_nd = _optimal_nd  # public: (K, 5) thetas, (m,) budgets -> N_opt, D_opt, loss (K, m)


def predict(fit3: Approach3Fit, C, level: float = LEVEL) -> Prediction:
    """N_opt, D_opt and the loss at the compute-optimal allocation for each budget C (FLOPs,
    C = 6 N D), with bootstrap intervals when the fit has them."""
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    check_positive("compute budget", C, 1)
    n, d, l = (v[0] for v in _optimal_nd(fit3.theta[None], C))
    T = fit3.boot
    if T is None or len(T) <= 1:
        return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist(), loss=l.tolist())
    with np.errstate(all="ignore"):
        nb, db, lb = _optimal_nd(T, C)
    iv = {k: [interval(v[:, j], level) for j in range(C.size)]
          for k, v in (("N_opt", nb), ("D_opt", db), ("loss", lb))}
    return Prediction(C=C.tolist(), N_opt=n.tolist(), D_opt=d.tolist(), loss=l.tolist(),
                      N_opt_interval=iv["N_opt"], D_opt_interval=iv["D_opt"],
                      loss_interval=iv["loss"])


def holdout_check(N, D, L, C, frac: float = 0.2, n_boot: int = 100, level: float = LEVEL,
                  seed: int = 0, delta: float = 1e-3) -> HoldoutCheck:
    """Fit Approach 3 on all but the top `frac` of runs by compute; predict the held-out ones."""
    N, D, L, C = (np.asarray(v, dtype=np.float64) for v in (N, D, L, C))
    k = max(1, int(round(frac * N.size)))
    order = np.argsort(C)
    train, test = order[:-k], order[-k:]
    f = fit_approach3(N[train], D[train], L[train], delta=delta, n_boot=n_boot, level=level,
                      seed=seed)
    pred = approach3_eval(f.theta, N[test], D[test])
    piv = None
    if f.boot is not None and len(f.boot) > 1:
        pb = approach3_eval(f.boot, N[test], D[test])
        piv = [interval(pb[:, j], level) for j in range(test.size)]
    return HoldoutCheck(
        n_train=int(train.size), held_out_index=test.tolist(), N=N[test].tolist(),
        D=D[test].tolist(), C=C[test].tolist(), loss=L[test].tolist(), predicted=pred.tolist(),
        relative_error=((pred - L[test]) / L[test]).tolist(), fit=f, predicted_interval=piv)


__all__ = ["GRID", "Approach3Fit", "HoldoutCheck", "approach3_objective", "fit_approach3",
           "approach3_eval", "predict", "holdout_check"]
