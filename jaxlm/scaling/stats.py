"""Shared pieces of the scaling fits (numpy only): input checks, bootstrap intervals, grouping
runs by size or budget, the compute frontier."""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
from threadpoolctl import threadpool_limits

from jaxlm.errors import JaxlmError
from jaxlm.scaling.records import Estimate

LEVEL = 0.95  # default two-sided interval level


def one_blas_thread(fn):
    """Run fn with BLAS on one thread: the optimizers make thousands of tiny BLAS calls, and
    OpenBLAS's thread wake-ups made them 4x slower on a busy 2-core machine (measured)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


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


def interval(samples: np.ndarray, level: float) -> list:
    """The two-sided percentile interval of the finite samples ([nan, nan] with fewer than 2)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return [float("nan"), float("nan")]
    q = (1 - level) / 2
    return [float(np.quantile(s, q)), float(np.quantile(s, 1 - q))]


def estimate(value: float, samples: Optional[np.ndarray], level: float) -> Estimate:
    """A constant with the percentile interval of its bootstrap samples (None: no interval)."""
    return Estimate(float(value), None if samples is None else tuple(interval(samples, level)))


@one_blas_thread
def safe_exp(x: np.ndarray) -> np.ndarray:
    """exp without the overflow warning (a degenerate bootstrap resample may overflow: inf)."""
    with np.errstate(over="ignore"):
        return np.exp(x)


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


__all__ = ["LEVEL", "one_blas_thread", "check_positive", "interval", "estimate", "safe_exp",
           "group_by_tolerance", "compute_frontier", "best_per_group"]
