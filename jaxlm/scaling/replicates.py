"""Replicate seeds in the fits (pure numpy): cells of runs that share (N, D) and differ only in
their seed, a two-stage (cells, then seeds within each cell) bootstrap, and the seed noise.

A sweep with `seeds: [0, 1, 2]` trains every (N, D) three times; those runs are replicates, not
independent points of the law. The bootstrap therefore resamples cells with replacement and,
within each drawn cell, its seeds with replacement (a hierarchical bootstrap), so an interval
reflects both how the law is sampled and how much a run's loss moves with its seed. The seed
noise is the pooled standard deviation of loss across seeds within cells.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxlm.scaling.records import Record


def cells(N: np.ndarray, D: np.ndarray, seed: Optional[np.ndarray],
          rtol: float = 0.01) -> Optional[np.ndarray]:
    """(n,) integer cell labels for runs of (nearly) equal N and D, when some cell holds runs of
    two or more seeds; None otherwise (no replicates: the fits resample runs as before)."""
    if seed is None:
        return None
    seed = np.asarray(seed, dtype=np.float64)
    if not np.isfinite(seed).any():
        return None
    key = np.stack([np.round(np.log(N) / np.log1p(rtol)), np.round(np.log(D) / np.log1p(rtol))],
                   axis=1)
    _, labels = np.unique(key, axis=0, return_inverse=True)
    labels = labels.ravel()
    for c in np.unique(labels):
        s = seed[labels == c]
        if np.unique(s[np.isfinite(s)]).size > 1:
            return labels
    return None


def resample(rng: np.random.Generator, idx: np.ndarray,
             labels: Optional[np.ndarray]) -> np.ndarray:
    """One bootstrap resample of the rows `idx`: rows with replacement (labels None), else their
    cells with replacement and each drawn cell's rows (seeds) with replacement."""
    idx = np.asarray(idx)
    if labels is None:
        return idx[rng.integers(0, idx.size, idx.size)]
    groups = [idx[labels[idx] == c] for c in np.unique(labels[idx])]
    out = [groups[j][rng.integers(0, groups[j].size, groups[j].size)]
           for j in rng.integers(0, len(groups), len(groups))]
    return np.concatenate(out)


def resampled_means(rng: np.random.Generator, reps: list[np.ndarray],
                    idx: np.ndarray) -> np.ndarray:
    """For each point in idx (a resample of points), the mean of a resample (with replacement)
    of its replicate losses `reps[i]` (vectorized: one draw for all points)."""
    sizes = np.asarray([len(r) for r in reps])
    flat, starts = np.concatenate(reps), np.cumsum(sizes) - sizes
    s = sizes[idx]
    pick = np.repeat(starts[idx], s) + (rng.random(s.sum()) * np.repeat(s, s)).astype(int)
    return np.add.reduceat(flat[pick], np.cumsum(s) - s) / s


def cell_means(labels: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Each array's mean per cell (cells in label order)."""
    count = np.bincount(labels)
    keep = count > 0
    return [(np.bincount(labels, weights=a) / np.maximum(count, 1))[keep] for a in arrays]


@dataclasses.dataclass(frozen=True)
class SeedNoise(Record):
    """Loss across replicate seeds: per (N, D) cell with two or more seeds, and pooled."""

    n_cells: int  # cells with two or more seeds
    seeds_per_cell: float  # mean
    pooled_std: float  # sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)), nats
    pooled_rel_std: float  # the same for log loss (relative noise)
    cells: list  # [{"N", "D", "n_seeds", "mean", "std"}]
    bootstrap: str = "hierarchical: (N, D) cells, then seeds within each cell"

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def seed_noise(N, D, L, labels: np.ndarray) -> Optional[SeedNoise]:
    """The seed noise of the cells holding two or more runs (None: no such cell)."""
    rows, ss, ss_log, dof = [], 0.0, 0.0, 0
    for c in np.unique(labels):
        g = np.flatnonzero(labels == c)
        if g.size < 2:
            continue
        s = float(np.std(L[g], ddof=1))
        rows.append({"N": float(N[g[0]]), "D": float(D[g[0]]), "n_seeds": int(g.size),
                     "mean": float(L[g].mean()), "std": s})
        ss += (g.size - 1) * s ** 2
        ss_log += (g.size - 1) * float(np.var(np.log(L[g]), ddof=1))
        dof += g.size - 1
    if not rows:
        return None
    return SeedNoise(n_cells=len(rows),
                     seeds_per_cell=float(np.mean([r["n_seeds"] for r in rows])),
                     pooled_std=float(np.sqrt(ss / dof)),
                     pooled_rel_std=float(np.sqrt(ss_log / dof)), cells=rows)


def markdown(noise: SeedNoise) -> list[str]:
    """report.md's lines on the seed noise."""
    worst = max(noise.cells, key=lambda r: r["std"])
    return ["### Replicate seeds", "",
            f"{noise.n_cells} (N, D) cells hold runs of several seeds ({noise.seeds_per_cell:.3g}"
            f" on average). Seed noise (std of loss across seeds, pooled over cells): "
            f"{noise.pooled_std:.4g} nats ({noise.pooled_rel_std:.2%} of the loss); largest in "
            f"one cell {worst['std']:.4g} (N {worst['N']:.3g}, D {worst['D']:.3g}). Intervals "
            "come from a hierarchical bootstrap (cells, then seeds within each cell); the power "
            "laws fit each cell's mean loss.", ""]


__all__ = ["cells", "resample", "resampled_means", "cell_means", "SeedNoise", "seed_noise", "markdown"]
