"""Scaling-law fitting: pure math on arrays, no I/O (numpy + scipy).

Conventions: N = non-embedding parameters, D = training tokens, C = training FLOPs, L = loss
(nats/token). Every fit returns a JSON-ready dict: each constant as
`{"value": v, "interval": [lo, hi]}` (percentile bootstrap at `level`), plus the residuals of
log-loss at the fitted values.

- `fit_power_law(x, L)`: Kaplan-style L(x) = E + A / x^alpha (E = 0 with irreducible=False),
  least squares on log-loss. Used for L(N), L(D) and the compute frontier L(C).
- `fit_approach2(N, D, C, L)`: Chinchilla Approach 2. Rows are grouped into IsoFLOP budgets by
  C (or an explicit budget label); per budget a parabola of L in log N gives N_opt; then
  N_opt = k * C^a and D_opt = k_D * C^b by log-log regression over budgets.
- `fit_approach3(N, D, L)`: Chinchilla Approach 3, L = E + A/N^alpha + B/D^beta, by the Huber
  loss (delta = 1e-3) on log L - LSE(a - alpha log N, b - beta log D, e), L-BFGS from a grid of
  initial values (Hoffmann et al. 2022; Besiroglu et al. 2024), with analytic gradients.
- `predict(fit3, C)`: compute-optimal N, D and loss for budgets C (C = 6 N D), with intervals.
"""

from __future__ import annotations

import functools
import itertools
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import least_squares, minimize
from threadpoolctl import threadpool_limits

from jaxlm.errors import JaxlmError

LEVEL = 0.95  # default two-sided interval level


def _one_blas_thread(fn):
    """Run fn with BLAS on one thread: the optimizers make thousands of tiny BLAS calls, and
    OpenBLAS's thread wake-ups made them 4x slower on a busy 2-core machine (measured)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------- validation and helpers


def check_positive(name: str, x: np.ndarray, min_points: int) -> np.ndarray:
    """x as float64 1-d; JaxlmError (one line) for NaN/inf, non-positive values or too few."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise JaxlmError(f"{name}: row {bad} is not a finite number")
    if np.any(x <= 0):
        bad = int(np.flatnonzero(x <= 0)[0])
        raise JaxlmError(f"{name}: row {bad} is {x[bad]:g}; scaling fits need positive values")
    if x.size < min_points:
        raise JaxlmError(f"too few points to fit: {x.size} (this fit needs at least {min_points})")
    return x


def _interval(samples: np.ndarray, level: float) -> list:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return [float("nan"), float("nan")]
    q = (1 - level) / 2
    return [float(np.quantile(s, q)), float(np.quantile(s, 1 - q))]


def _const(value: float, samples: Optional[np.ndarray], level: float) -> dict:
    out = {"value": float(value)}
    if samples is not None:
        out["interval"] = _interval(samples, level)
    return out


def group_by_tolerance(x: np.ndarray, rtol: float) -> np.ndarray:
    """Integer labels grouping positive values: sorted, a new group where the gap between
    neighbours exceeds a factor (1 + rtol). Labels increase with x."""
    order = np.argsort(x)
    lx = np.log(x[order])
    new = np.concatenate([[0], (np.diff(lx) > np.log1p(rtol)).astype(int)])
    labels = np.empty(x.size, dtype=int)
    labels[order] = np.cumsum(new)
    return labels


def compute_frontier(C: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Indices of the lower envelope of loss vs compute: runs (in increasing C) whose loss is
    below that of every run with less compute."""
    order = np.lexsort((L, C))
    best, keep = np.inf, []
    for i in order:
        if L[i] < best:
            best = L[i]
            keep.append(i)
    return np.asarray(keep, dtype=int)


def best_per_group(x: np.ndarray, L: np.ndarray, rtol: float = 0.01) -> np.ndarray:
    """Index of the lowest loss within each group of (nearly) equal x."""
    labels = group_by_tolerance(x, rtol)
    return np.asarray([np.flatnonzero(labels == g)[np.argmin(L[labels == g])]
                       for g in np.unique(labels)], dtype=int)


# ---------------------------------------------------------------- Kaplan-style power laws


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


@_one_blas_thread
def fit_power_law(x, L, irreducible: bool = True, n_boot: int = 200, level: float = LEVEL,
                  seed: int = 0, name: str = "x") -> dict:
    """L(x) = E + A / x^alpha (Kaplan form (x_c / x)^alpha with x_c = A^(1/alpha) when E = 0),
    least squares on log L. Intervals: bootstrap over points."""
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
        boots.append(_power_law_once(lx[idx], ll[idx], irreducible,
                                     p if irreducible and np.isfinite(p[2]) else None))
    B = np.asarray(boots).reshape(-1, 3) if boots else None
    A, alpha, E = np.exp(p[0]), p[1], np.exp(p[2])
    pred = np.log(E + A * x ** -alpha)
    out = {
        "form": f"L({name}) = E + A / {name}^alpha" if irreducible else
                f"L({name}) = A / {name}^alpha = ({name}_c / {name})^alpha",
        "n_points": int(x.size),
        "A": _const(A, None if B is None else _exp(B[:, 0]), level),
        "alpha": _const(alpha, None if B is None else B[:, 1], level),
        f"{name}_c": _const(A ** (1 / alpha), None if B is None else
                            _exp(B[:, 0] / B[:, 1]), level),
        "x": x.tolist(), "loss": L.tolist(),
        "residuals_log_loss": (ll - pred).tolist(),
        "rmse_log_loss": float(np.sqrt(np.mean((ll - pred) ** 2))),
    }
    if irreducible:
        out["E"] = _const(E, None if B is None else _exp(B[:, 2]), level)
    return out


def power_law_eval(fit: dict, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    E = fit["E"]["value"] if "E" in fit else 0.0
    return E + fit["A"]["value"] * x ** -fit["alpha"]["value"]


# ---------------------------------------------------------------- Chinchilla Approach 2


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


@_one_blas_thread
def _exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(x)


def fit_approach2(N, D, C, L, rtol: float = 0.25, budget=None, n_boot: int = 200,
                  level: float = LEVEL, seed: int = 0, min_sizes: int = 3) -> dict:
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
    budgets = []
    for g in groups:
        v, coef = _parabola_min(lN[g], L[g])
        budgets.append({
            "C": float(np.exp(lC[g].mean())), "n_runs": int(g.size),
            "N_opt": float(np.exp(v)) if np.isfinite(v) else None,
            "loss_at_N_opt": float(np.polyval(coef, v)) if np.isfinite(v) else None,
            "parabola_in_log_N": coef.tolist(),
            "N": N[g].tolist(), "D": D[g].tolist(), "loss": L[g].tolist(),
            "residuals_loss": (L[g] - np.polyval(coef, lN[g])).tolist(),
        })
    return {
        "form": "N_opt = k * C^a, D_opt = k_D * C^b (parabola of loss in log N per budget)",
        "n_budgets": len(groups),
        "a": _const(p[0], None if B is None else B[:, 0], level),
        # a degenerate bootstrap resample can put log k past float range: inf, not a warning
        "k": _const(np.exp(p[1]), None if B is None else _exp(B[:, 1]), level),
        "b": _const(p[2], None if B is None else B[:, 2], level),
        "k_D": _const(np.exp(p[3]), None if B is None else _exp(B[:, 3]), level),
        "budgets": budgets,
        "_boot": B,  # (n_boot, 4) [a, log k, b, log k_D]; dropped before writing JSON
    }


def approach2_predict(fit2: dict, C, level: float = LEVEL) -> dict:
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    lC = np.log(C)
    n = fit2["k"]["value"] * C ** fit2["a"]["value"]
    d = fit2["k_D"]["value"] * C ** fit2["b"]["value"]
    out = {"C": C.tolist(), "N_opt": n.tolist(), "D_opt": d.tolist()}
    B = fit2.get("_boot")
    if B is not None and len(B) > 1:
        nb = _exp(B[:, 1:2] + B[:, 0:1] * lC)
        db = _exp(B[:, 3:4] + B[:, 2:3] * lC)
        out["N_opt_interval"] = [_interval(nb[:, j], level) for j in range(C.size)]
        out["D_opt_interval"] = [_interval(db[:, j], level) for j in range(C.size)]
    return out


# ---------------------------------------------------------------- Chinchilla Approach 3

# Initial-value grid of Besiroglu et al. 2024 (after Hoffmann et al. 2022): theta = (a, b, e,
# alpha, beta) with A = exp(a), B = exp(b), E = exp(e).
GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))), dtype=np.float64)


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


@_one_blas_thread
def fit_approach3(N, D, L, delta: float = 1e-3, n_boot: int = 200, level: float = LEVEL,
                  seed: int = 0, n_starts: int = 8, grid: Optional[np.ndarray] = None) -> dict:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al.'s Approach 3).

    The whole initial-value grid (default: Besiroglu et al.'s 6*6*5*5*5 = 4,500 points) is
    scored in one vectorized pass and L-BFGS runs from the `n_starts` best of them; the fit is
    the lowest objective reached. Intervals: a bootstrap over points; each resample's L-BFGS
    starts from the full-data optimum. Returns constants, `alpha/(alpha+beta)` exponents of the
    compute-optimal allocation, residuals of log L and the bootstrap samples (`_boot`)."""
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
        w = np.bincount(rng.integers(0, N.size, N.size), minlength=N.size).astype(np.float64)
        boots.append(_lbfgs(theta, lN, lD, lL, delta, w, ftol=1e-12, gtol=1e-9)[0])
    T = np.asarray(boots).reshape(-1, 5) if boots else None
    return _approach3_result(theta, fval, T, N, D, L, delta, level)


def _approach3_result(theta, fval, T, N, D, L, delta, level) -> dict:
    a, b, e, al, be = theta
    pred = np.logaddexp(np.logaddexp(a - al * np.log(N), b - be * np.log(D)), e)
    res = np.log(L) - pred
    col = (lambda i, f=lambda v: v: None if T is None else f(T[:, i]))
    return {
        "form": "L(N, D) = E + A / N^alpha + B / D^beta",
        "n_points": int(N.size), "huber_delta": delta, "objective": float(fval),
        "E": _const(np.exp(e), col(2, np.exp), level),
        "A": _const(np.exp(a), col(0, np.exp), level),
        "B": _const(np.exp(b), col(1, np.exp), level),
        "alpha": _const(al, col(3), level),
        "beta": _const(be, col(4), level),
        # compute-optimal allocation with C = 6 N D: N_opt ~ C^a, D_opt ~ C^b
        "a": _const(be / (al + be), None if T is None else T[:, 4] / (T[:, 3] + T[:, 4]), level),
        "b": _const(al / (al + be), None if T is None else T[:, 3] / (T[:, 3] + T[:, 4]), level),
        "N": N.tolist(), "D": D.tolist(), "loss": L.tolist(),
        "residuals_log_loss": res.tolist(),
        "rmse_log_loss": float(np.sqrt(np.mean(res ** 2))),
        "_theta": np.asarray(theta), "_boot": T,
    }


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


def predict(fit3: dict, C, level: float = LEVEL) -> dict:
    """N_opt, D_opt and the loss at the compute-optimal allocation for each budget C (FLOPs,
    C = 6 N D), with bootstrap intervals when the fit has them."""
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    check_positive("compute budget", C, 1)
    n, d, l = (v[0] for v in _optimal_nd(fit3["_theta"][None], C))
    out = {"C": C.tolist(), "N_opt": n.tolist(), "D_opt": d.tolist(), "loss": l.tolist()}
    T = fit3.get("_boot")
    if T is not None and len(T) > 1:
        with np.errstate(all="ignore"):
            nb, db, lb = _optimal_nd(T, C)
        for key, v in (("N_opt", nb), ("D_opt", db), ("loss", lb)):
            out[key + "_interval"] = [_interval(v[:, j], level) for j in range(C.size)]
    return out


def holdout_check(N, D, L, C, frac: float = 0.2, n_boot: int = 100, level: float = LEVEL,
                  seed: int = 0, delta: float = 1e-3) -> dict:
    """Fit Approach 3 on all but the top `frac` of runs by compute; predict the held-out ones."""
    N, D, L, C = (np.asarray(v, dtype=np.float64) for v in (N, D, L, C))
    k = max(1, int(round(frac * N.size)))
    order = np.argsort(C)
    train, test = order[:-k], order[-k:]
    f = fit_approach3(N[train], D[train], L[train], delta=delta, n_boot=n_boot, level=level,
                      seed=seed)
    pred = approach3_eval(f["_theta"], N[test], D[test])
    out = {"n_train": int(train.size), "held_out_index": test.tolist(),
           "N": N[test].tolist(), "D": D[test].tolist(), "C": C[test].tolist(),
           "loss": L[test].tolist(), "predicted": pred.tolist(),
           "relative_error": ((pred - L[test]) / L[test]).tolist()}
    if f["_boot"] is not None and len(f["_boot"]) > 1:
        pb = approach3_eval(f["_boot"], N[test], D[test])
        out["predicted_interval"] = [_interval(pb[:, j], level) for j in range(test.size)]
    out["fit"] = {k: f[k] for k in ("E", "A", "B", "alpha", "beta")}
    return out


# ---------------------------------------------------------------- everything for one family


@_one_blas_thread
def fit_all(N, D, C, L, budget=None, irreducible: bool = True, approach2: str = "auto",
            budget_rtol: float = 0.25, predict_at: Sequence[float] = (), holdout: float = 0.2,
            n_boot: int = 200, level: float = LEVEL, seed: int = 0, delta: float = 1e-3) -> dict:
    """Every fit on one family's runs. N, D, C, L: (n,) arrays (C may be measured FLOPs, which
    include attention; D = tokens). approach2: "auto" (run on the budgets holding >= 3 sizes when
    at least two do, else skip with a note), "yes" (every budget must qualify: JaxlmError
    otherwise) or "no". Sub-fits the data cannot support are reported under `skipped`."""
    N = check_positive("params", N, 8)
    D, C, L = (check_positive(n, v, 8) for n, v in (("tokens", D), ("flops", C), ("loss", L)))
    if approach2 not in ("auto", "yes", "no"):
        raise JaxlmError(f"approach2 must be auto, yes or no, not {approach2!r}")
    out: dict = {"n_points": int(N.size), "skipped": {}}

    def power(name, x, idx):
        k = idx.size
        if k < 3:
            out["skipped"][name] = f"{k} distinct point(s); a power law needs at least 3"
            return
        out[name] = fit_power_law(x[idx], L[idx], irreducible=irreducible and k >= 4,
                                  n_boot=n_boot, level=level, seed=seed, name=name[2])
        out[name]["index"] = idx.tolist()

    power("L(N)", N, best_per_group(N, L))
    power("L(D)", D, best_per_group(D, L))
    front = compute_frontier(C, L)
    if front.size >= 3:
        out["L(C)"] = fit_power_law(C[front], L[front], irreducible=irreducible and front.size >= 4,
                                    n_boot=n_boot, level=level, seed=seed, name="C")
        out["L(C)"]["index"] = front.tolist()
    else:
        out["skipped"]["L(C)"] = f"the compute frontier has {front.size} point(s); need 3"

    if approach2 != "no":
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
            out["approach2"] = fit_approach2(N, D, C, L, budget_rtol, budget, n_boot, level, seed)
        elif n_ok >= 2:
            try:
                out["approach2"] = fit_approach2(
                    N[ok], D[ok], C[ok], L[ok], budget_rtol,
                    None if budget is None else np.asarray(budget)[ok], n_boot, level, seed)
                dropped = np.unique(labels).size - n_ok
                if dropped:
                    out["approach2"]["note"] = (f"{dropped} group(s) of runs left out (fewer "
                                                "than 3 sizes, or C spread too wide)")
            except JaxlmError as e:
                out["skipped"]["approach2"] = str(e)
        else:
            out["skipped"]["approach2"] = (f"{n_ok} IsoFLOP budget(s) with at least 3 sizes "
                                           "and one compute budget (need 2): not an IsoFLOP "
                                           "sweep")

    out["approach3"] = fit_approach3(N, D, L, delta=delta, n_boot=n_boot, level=level, seed=seed)
    cs = sorted(set([float(C.max()), float(C.max()) * 10, float(C.max()) * 100,
                     *map(float, predict_at)]))
    out["predictions"] = {"approach3": predict(out["approach3"], cs, level)}
    if "approach2" in out:
        out["predictions"]["approach2"] = approach2_predict(out["approach2"], cs, level)
    if "L(C)" in out:
        out["predictions"]["L(C)"] = {"C": cs, "loss": power_law_eval(out["L(C)"], cs).tolist()}
    if holdout > 0 and N.size * (1 - holdout) >= 10:
        out["holdout"] = holdout_check(N, D, L, C, holdout, n_boot // 4, level, seed,
                                       delta)
    else:
        out["skipped"]["holdout"] = "too few runs to hold some out (need 10 left to fit)"
    return out


def strip_private(obj):
    """Drop `_`-prefixed keys and turn numpy values into JSON-ready Python ones."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [strip_private(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strip_private(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


__all__ = ["fit_power_law", "power_law_eval", "compute_frontier", "best_per_group",
           "isoflop_budgets", "fit_approach2", "approach2_predict", "fit_approach3",
           "approach3_eval", "predict", "holdout_check", "check_positive", "strip_private",
           "group_by_tolerance", "fit_all", "GRID", "LEVEL"]
