"""Grid design rules of a sweep (pure): shapes for parameter targets, the tokens-per-parameter
window, the per-budget batch size, and the record of members a rule left out.

- Shapes: a target N is solved over n_layers (one depth: `depth`, or a size's n_layers) and
  d_model a multiple of `width_multiple`; among shapes within `tolerance` of N the one whose
  d_model / n_layers is nearest `aspect_ratio`. With `fixed_aspect`, d_model = aspect_ratio ·
  n_layers (rounded to width_multiple) and only the depth is chosen, nearest N: a family's
  shapes then grow along one line instead of jumping between depths.
- IsoFLOP members whose D/N lies outside `isoflop.tokens_per_param` (or the family's own
  `families.F.tokens_per_param`) are left out, as are those
  with fewer than `min_steps` steps; with `isoflop.batch_for_min_steps` a member's batch is the
  largest one <= its batch rule that still gives min_steps steps, and as many more eval
  batches as keep its evals on the same held-out sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

from jaxlm.scaling.spec import RuleSpec

Count = Callable[[int, int], int]  # (n_layers, d_model) -> non-embedding parameters


@dataclasses.dataclass(frozen=True)
class Excluded:
    """A (size, budget, hp setting) the grid rules left out, for every seed, and why."""

    name: str  # the member name it would have had (without -sSEED)
    family: str
    params: int
    budget: Optional[float]
    tokens: float  # the budget's D for this size
    reason: str


def _widths(count: Count, n_layers: int, target: float, wm: int) -> list[int]:
    """The multiples of wm bracketing the target at this depth (N grows with d_model)."""
    lo, hi = 1, 1
    while count(n_layers, hi * wm) < target and hi < 1 << 12:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the largest k with count(k) < target is lo (or none)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(n_layers, mid * wm) < target else (lo, mid)
    return sorted({lo * wm, hi * wm})


def solve_shape(count: Count, target: float, width_multiple: int, aspect_ratio: float,
                max_layers: int, tolerance: float, n_layers: Optional[int] = None,
                fixed_aspect: bool = False) -> tuple[int, int]:
    """(n_layers, d_model) for a non-embedding parameter target (see the module docstring)."""
    wm = width_multiple
    layers = [n_layers] if n_layers else range(1, max_layers + 1)
    cands = []  # (|log N / target|, n_layers, d_model)
    for nl in layers:
        widths = ([max(wm, round(aspect_ratio * nl / wm) * wm)] if fixed_aspect
                  else _widths(count, nl, target, wm))
        cands += [(abs(math.log(count(nl, w) / target)), nl, w) for w in widths]
    if fixed_aspect:
        best = min(cands)
    else:
        ok = [c for c in cands if c[0] <= math.log1p(tolerance)]
        best = (min(ok, key=lambda c: (abs(math.log(c[2] / c[1] / aspect_ratio)), c[0]))
                if ok else min(cands))
    return best[1], best[2]


def size_rule(r: RuleSpec, base: float, n: int) -> float:
    """value(N) = value · (N / ref_params)^exponent clipped to [min, max] (value None: base)."""
    v = (r.value if r.value is not None else base) * (n / r.ref_params) ** r.exponent
    if r.min is not None:
        v = max(v, r.min)
    if r.max is not None:
        v = min(v, r.max)
    return v


def steps_for(tokens: float, batch: int, seq_len: int) -> int:
    return max(1, round(tokens / (batch * seq_len)))


def batch_for_steps(tokens: float, batch: int, seq_len: int, min_steps: int) -> int:
    """The largest batch <= `batch` whose run of `tokens` has at least min_steps steps (the
    rule's batch when even batch 1 falls short: the member is then left out by min_steps)."""
    if steps_for(tokens, batch, seq_len) >= min_steps:
        return batch
    b = max(1, min(batch, math.floor(tokens / (seq_len * (min_steps - 0.5)))))
    while b > 1 and steps_for(tokens, b, seq_len) < min_steps:
        b -= 1
    return b if steps_for(tokens, b, seq_len) >= min_steps else batch


def same_eval_tokens(t: Any, rule: Optional[int], batch: int) -> list[str]:
    """Overrides for a member whose batch was lowered from its `rule` (`t`: the base
    TrainConfig). Evals count batches of the train batch, so such a member gets proportionally
    more eval batches: every member of a sweep is scored on the same held-out sequences (the
    first rule x batches of the ordered eval split; a batch that does not divide that count sees
    at most batch - 1 more)."""
    if rule is None or rule == batch:
        return []
    return [f"train.{k}={-(-n * rule // batch)}" for k, n in
            (("eval_batches", t.eval_batches), ("final_eval_batches", t.final_eval_batches))
            if n > 0]


def window_reason(tokens: float, params: int, window: Optional[Sequence[float]],
                  key: str = "isoflop.tokens_per_param") -> Optional[str]:
    """Why D/N lies outside the tokens-per-parameter window of spec key `key` (None: inside,
    or no window)."""
    if window is None or params <= 0:
        return None
    ratio = tokens / params
    if ratio < window[0]:
        return f"D/N = {ratio:.3g} is below {key} min {window[0]:g}"
    if ratio > window[1]:
        return f"D/N = {ratio:.3g} is above {key} max {window[1]:g}"
    return None


def steps_reason(steps: int, min_steps: int) -> Optional[str]:
    return (f"{steps} steps, fewer than isoflop.min_steps {min_steps}"
            if steps < min_steps else None)


def excluded_table(excluded: Sequence[Excluded]) -> list[str]:
    """The plan table's lines for the members left out."""
    if not excluded:
        return []
    lines = [f"left out by the grid rules ({len(excluded)}; every seed):"]
    for e in excluded:
        budget = f"{e.budget:.2g}" if e.budget is not None else "-"
        lines.append(f"  {e.name:<34} {e.params:>9,} {e.tokens:>9.3g} {budget:>8}  {e.reason}")
    return lines


__all__ = ["Excluded", "solve_shape", "size_rule", "steps_for", "batch_for_steps", "same_eval_tokens", "window_reason",
           "steps_reason", "excluded_table"]
