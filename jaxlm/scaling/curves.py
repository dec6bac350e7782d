"""Approach 1's points from periodic evals (pure): a run's eval records -> (tokens, FLOPs, loss).

A run's metrics.jsonl holds an eval every `train.eval_every` steps: one long run per size gives
a whole loss curve. Which of those evals stand for "a run trained to that many tokens" depends
on the lr schedule. An intermediate eval of a decaying schedule lies above what a run trained
to that length reaches (its lr has not decayed yet); Chinchilla's Approach 1 took the envelope
of cosine runs of several cycle lengths per size, and found that a cycle overshooting the
tokens trained by more than 25% costs loss (Hoffmann et al. 2022, appendix B). So:

- `constant`: every eval. The run up to step s is a constant-lr run of s steps (same warmup in
  steps), as valid as the constant-lr runs' final losses the fit already uses.
- `cosine`, `linear` (decaying until train.steps): the evals at steps s with
  train.steps <= overshoot * s (default 1.25: the last 20% of the run). The cycle is at most 25%
  longer than s, so the loss is at most slightly above that of a run whose cycle ends at s.
- `wsd`: none. Before its decay a wsd run is a constant-lr trunk (trunks are left out of the
  fit); during it, partly decayed. Its cooldown branches are the points to use.

The final step is never a curve point: it is the run's own row (final eval) in runs.csv.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np

from jaxlm.scaling.records import Record

OVERSHOOT = 1.25  # a decaying run's eval at step s counts when train.steps <= OVERSHOOT * s
CURVE_SCHEDULES = ("constant", "cosine", "linear")  # wsd: no curve points (see above)


@dataclasses.dataclass(frozen=True)
class EvalCurve:
    """The usable evals of one run, (k,) arrays by step; `evals`: all its periodic evals."""

    step: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    evals: int
    eval_batches: Optional[int]  # batches per periodic eval (the final eval may use more)


def eval_points(records: Sequence[dict], flops_per_token: float, tokens_per_step: int,
                schedule: str, steps: int, overshoot: float = OVERSHOOT) -> EvalCurve:
    """The evals of `records` (metrics.jsonl) that stand for a run trained to that length (see
    the module docstring). Tokens: a record's `tokens_seen`, else step * tokens_per_step;
    FLOPs: tokens * flops_per_token (jaxlm.flops.flops_per_token, the sweep's counter)."""
    by_step: dict[int, tuple[float, float]] = {}
    batches = None
    for r in records:
        if "event" in r or not isinstance(r.get("step"), int) or "eval_loss" not in r:
            continue
        loss, step = r["eval_loss"], r["step"]
        if not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss <= 0:
            loss = math.nan  # a non-finite eval is written as null
        tokens = r.get("tokens_seen") or step * tokens_per_step
        by_step[step] = (float(tokens), float(loss))  # a resumed run: the last record wins
        batches = r.get("eval_batches", batches)
    s = np.asarray(sorted(by_step), dtype=np.int64)
    t = np.asarray([by_step[i][0] for i in s], dtype=np.float64).reshape(-1)
    loss = np.asarray([by_step[i][1] for i in s], dtype=np.float64).reshape(-1)
    keep = (s > 0) & (s < steps) & np.isfinite(loss) & (t > 0)
    if schedule in ("cosine", "linear"):
        keep &= steps <= overshoot * s
    elif schedule != "constant":
        keep[:] = False
    return EvalCurve(step=s[keep], tokens=t[keep], flops=t[keep] * flops_per_token,
                     loss=loss[keep], evals=int(s.size),
                     eval_batches=batches if isinstance(batches, int) else None)


def final_eval_batches(records: Sequence[dict]) -> Optional[int]:
    """Batches of the run's final eval (its `event: final` record), None when it has none."""
    final = [r for r in records if r.get("event") == "final"]
    n = final[-1].get("eval_batches") if final else None
    return n if isinstance(n, int) else None


@dataclasses.dataclass(frozen=True)
class CurveRun(Record):
    """What one run's eval curve gave Approach 1 (fit.json's approach1.curves)."""

    name: str
    schedule: str
    steps: int  # the run's train.steps
    evals: int  # periodic evals in its metrics.jsonl
    used: int  # of them given to Approach 1
    first_step: Optional[int]  # the earliest used
    eval_batches: Optional[int]  # batches per periodic eval
    final_eval_batches: Optional[int]  # batches of its final eval (its runs.csv loss)

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Curves:
    """Approach 1's points from eval curves: (n,) arrays N, D, C, L, and the runs they are of."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    L: np.ndarray
    runs: tuple[CurveRun, ...]
    overshoot: float = OVERSHOOT

    @property
    def n_points(self) -> int:
        return int(self.N.size)


def gather(items: Sequence[tuple[str, float, str, int, EvalCurve, Optional[int]]],
           overshoot: float = OVERSHOOT) -> Curves:
    """Curves from (name, N, schedule, train.steps, its EvalCurve, final eval batches) per run."""
    N, D, C, L, runs = [], [], [], [], []
    for name, n, schedule, steps, c, final_batches in items:
        N.append(np.full(c.loss.size, float(n))), D.append(c.tokens), C.append(c.flops)
        L.append(c.loss)
        runs.append(CurveRun(name=name, schedule=schedule, steps=int(steps), evals=c.evals,
                             used=int(c.loss.size),
                             first_step=int(c.step[0]) if c.step.size else None,
                             eval_batches=c.eval_batches, final_eval_batches=final_batches))
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))  # noqa: E731
    return Curves(N=cat(N), D=cat(D), C=cat(C), L=cat(L), runs=tuple(runs), overshoot=overshoot)


__all__ = ["OVERSHOOT", "CURVE_SCHEDULES", "EvalCurve", "eval_points", "CurveRun", "Curves",
           "gather", "final_eval_batches"]
