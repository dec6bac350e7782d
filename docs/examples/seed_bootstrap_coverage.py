"""Interval coverage with replicate seeds (docs/sweep_grid.md): the hierarchical (cells, then
seeds) bootstrap against the run-level one, on synthetic laws with seed noise.

Run from the repository root: PYTHONPATH=.:tests python docs/examples/seed_bootstrap_coverage.py 30
"""

import sys
import time

import numpy as np

from jaxlm.scaling import fit as F
from jaxlm.scaling import replicates as R
from jaxlm.scaling.stats import best_per_group
from scaling_helpers import isoflop_grid


def power_law(draws: int) -> dict:
    """L(N) = 30 N^-0.3, 8 sizes x 3 seeds, 2% log-normal noise: 90% intervals of alpha and A
    from cell means + hierarchical bootstrap vs the best seed per size (the old fitter)."""
    A0, al0, sig, N = 30.0, 0.3, 0.02, np.geomspace(1e4, 1e7, 8)
    hits = {"cell means, hierarchical": np.zeros(2), "best seed per size": np.zeros(2)}
    for k in range(draws):
        rng = np.random.default_rng(100 + k)
        Nr, seed = np.repeat(N, 3), np.tile([0, 1, 2], 8)
        L = A0 * Nr ** -al0 * np.exp(rng.normal(0, sig, Nr.size))
        labels = R.cells(Nr, Nr, seed)
        reps = [L[labels == c] for c in np.unique(labels)]
        idx = best_per_group(Nr, L)
        fits = {"cell means, hierarchical": F.fit_power_law(
                    N, [r.mean() for r in reps], irreducible=False, n_boot=200, level=0.9,
                    reps=reps, seed=k),
                "best seed per size": F.fit_power_law(Nr[idx], L[idx], irreducible=False,
                                                      n_boot=200, level=0.9, seed=k)}
        for name, f in fits.items():
            hits[name] += [f.alpha.interval[0] <= al0 <= f.alpha.interval[1],
                           f.A.interval[0] <= A0 <= f.A.interval[1]]
    return {n: (h / draws).round(2).tolist() for n, h in hits.items()}


def approach23(draws: int) -> dict:
    """3 IsoFLOP budgets x 5 sizes x 3 seeds, 1% noise: 90% intervals of a (Approach 3, 2)."""
    k = dict(E=1.8, A=400.0, B=1500.0, al=0.34, be=0.30)
    a_true = k["be"] / (k["al"] + k["be"])
    hits = {"hierarchical": np.zeros(2), "runs": np.zeros(2)}
    for j in range(draws):
        rng = np.random.default_rng(500 + j)
        N, D, C, _ = isoflop_grid(rng, k, 0.0, budgets=np.geomspace(1e17, 1e19, 3), per_budget=5)
        Nr, Dr, Cr = (np.tile(v, 3) for v in (N, D, C))
        L = (k["E"] + k["A"] / Nr ** k["al"] + k["B"] / Dr ** k["be"]) * np.exp(
            rng.normal(0, 0.01, Nr.size))
        cells = R.cells(Nr, Dr, np.repeat([0, 1, 2], N.size))
        for name, c in (("hierarchical", cells), ("runs", None)):
            f3 = F.fit_approach3(Nr, Dr, L, n_boot=60, level=0.9, seed=j, cells=c)
            f2 = F.fit_approach2(Nr, Dr, Cr, L, n_boot=60, level=0.9, seed=j, cells=c)
            hits[name] += [f3.a.interval[0] <= a_true <= f3.a.interval[1],
                           f2.fitted and f2.a.interval[0] <= a_true <= f2.a.interval[1]]
    return {n: (h / draws).round(2).tolist() for n, h in hits.items()}


if __name__ == "__main__":
    draws = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    t = time.time()
    print("power law [alpha, A]:", power_law(2 * draws))
    print("approach 3, 2 [a]:", approach23(draws), f"({time.time() - t:.0f} s)")
