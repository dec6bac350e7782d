"""Hyperparameter axes in the fit (pure numpy): the best run per (N, D), and how far the
per-size optimum of each hyperparameter moved.

A sweep with hp axes (spec key hp) trains several runs per (N, D), differing in lr, batch size,
b2 or warmup; the fits use the lowest-loss one of each (N, D), so that badly tuned runs do not
bias the law. `summarize` says, per (N, D), which setting won and by how much, and per size
the winning lr at its largest D relative to the smallest size's: a ratio far from 1 says the
lr rule (or the absence of muP) moves the optimum with N, and a winner at the edge of the grid
says the grid does not bracket the optimum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxlm.scaling.records import Record

HP_COLUMNS = ("lr", "batch", "b2", "warmup")  # runs.csv columns of the hp axes


def _keys(N, D, seed, rtol: float = 0.01) -> np.ndarray:
    """(n, 3) group keys: (nearly) equal N and D, the same seed (replicates are not tuning)."""
    seed = np.full(N.shape, -1.0) if seed is None else np.nan_to_num(seed, nan=-1.0)
    return np.stack([np.round(np.log(N) / np.log1p(rtol)), np.round(np.log(D) / np.log1p(rtol)),
                     seed], axis=1)


def best_per_nd(N: np.ndarray, D: np.ndarray, L: np.ndarray,
                seed: Optional[np.ndarray] = None) -> np.ndarray:
    """Sorted indices of the lowest loss within each group of (nearly) equal (N, D) and the
    same seed (None: one seed)."""
    key = _keys(N, D, seed)
    best: dict[tuple, int] = {}
    for i, k in enumerate(map(tuple, key)):
        if k not in best or L[i] < L[best[k]]:
            best[k] = i
    return np.asarray(sorted(best.values()), dtype=int)


@dataclasses.dataclass(frozen=True)
class NdChoice(Record):
    """The runs of one (N, D): the winner's name and hyperparameters, the loss it saved."""

    N: float
    D: float
    runs: int
    best: str
    best_hp: dict  # column -> value of the winner
    loss_best: float
    loss_worst: float
    at_edge: list  # hp columns whose winning value is the smallest or largest tried

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Tuning(Record):
    choices: tuple[NdChoice, ...]
    # per size (N ascending): the winning lr at its largest D / the smallest size's
    lr_moved: Optional[list[tuple[float, float, float]]]  # (N, best lr, ratio)

    def _items(self) -> list[tuple[str, Any]]:
        return [("choices", list(self.choices)), ("lr_moved", self.lr_moved)]


def summarize(N, D, L, names: list[str], hp: dict[str, np.ndarray],
              seed: Optional[np.ndarray] = None) -> Optional[Tuning]:
    """None when no (N, D, seed) has more than one run; hp: column -> (n,) values (NaN:
    absent)."""
    keep = best_per_nd(N, D, L, seed)
    if keep.size == N.size:
        return None
    key = _keys(N, D, seed)
    choices = []
    for i in keep:
        group = np.flatnonzero((key == key[i]).all(axis=1))
        edge = [c for c, v in hp.items() if np.unique(v[group][np.isfinite(v[group])]).size > 1
                and v[i] in (np.nanmin(v[group]), np.nanmax(v[group]))]
        choices.append(NdChoice(N=float(N[i]), D=float(D[i]), runs=int(group.size),
                                best=names[i], best_hp={c: float(v[i]) for c, v in hp.items()
                                                        if np.isfinite(v[i])},
                                loss_best=float(L[i]), loss_worst=float(L[group].max()),
                                at_edge=edge))
    moved = None
    if "lr" in hp:
        per_size: dict[float, NdChoice] = {}
        for c in choices:  # the winner at each size's largest D
            if c.runs > 1 and "lr" in c.best_hp and (c.N not in per_size or c.D > per_size[c.N].D):
                per_size[c.N] = c
        if per_size:
            sizes = sorted(per_size)
            ref = per_size[sizes[0]].best_hp["lr"]
            moved = [(n, per_size[n].best_hp["lr"], per_size[n].best_hp["lr"] / ref)
                     for n in sizes]
    return Tuning(tuple(choices), moved)


def select(fam: dict) -> None:
    """A family of report.read_runs in place: its arrays cut to the best run per (N, D), the
    summary under "tuning" (None without repeated (N, D))."""
    hp = {c: np.asarray(fam["hp"][c], dtype=np.float64) for c in HP_COLUMNS}
    hp = {c: v for c, v in hp.items() if np.isfinite(v).any()}
    seed = np.asarray(fam["hp"]["seed"], dtype=np.float64)
    fam["tuning"] = summarize(fam["N"], fam["D"], fam["L"], fam["names"], hp, seed)
    keep = best_per_nd(fam["N"], fam["D"], fam["L"], seed)
    for k in ("N", "D", "C", "L"):
        fam[k] = fam[k][keep]
    fam["seed"] = seed[keep]  # replicate seeds, for the fits (jaxlm.scaling.replicates)
    fam["names"] = [fam["names"][i] for i in keep]
    if fam["budget"] is not None:
        fam["budget"] = [fam["budget"][i] for i in keep]


def markdown(t: Tuning) -> list[str]:
    """report.md's section on the hp axes."""
    tuned = [c for c in t.choices if c.runs > 1]
    L = ["### Hyperparameter axes: the best run per (N, D)", "",
         f"{len(tuned)} (N, D) settings hold more than one run; the fits use the lowest-loss "
         "run of each.", "", "| N | D | runs | best | its hyperparameters | loss best / worst |",
         "|---|---|---|---|---|---|"]
    for c in tuned:
        hp = ", ".join(f"{k} {v:g}" + (" (grid edge)" if k in c.at_edge else "")
                       for k, v in c.best_hp.items())
        L.append(f"| {c.N:.3g} | {c.D:.3g} | {c.runs} | {c.best} | {hp} | "
                 f"{c.loss_best:.4f} / {c.loss_worst:.4f} |")
    if t.lr_moved:
        L += ["", "Per-size optimum of lr (at each size's largest D), relative to the smallest "
              "size's: " + ", ".join(f"N {n:.3g}: {lr:g} (x{r:.2g})" for n, lr, r in t.lr_moved)
              + "."]
    if any(c.at_edge for c in tuned):
        L += ["", "A winner at the edge of its grid is not bracketed: the optimum may lie "
              "beyond the values tried."]
    return L + [""]


__all__ = ["HP_COLUMNS", "best_per_nd", "summarize", "select", "markdown", "Tuning", "NdChoice"]
