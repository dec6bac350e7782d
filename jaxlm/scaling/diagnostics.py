"""Fit diagnostics: which numbers of a fit the runs do not identify, and why (pure: fit records
in, typed `Diagnostic` records out; no I/O).

A fit always returns numbers; `diagnose(fits)` says which of them are not results. Each
Diagnostic names its family, the quantity (`what`: "approach3.E", "L(N).alpha",
"approach2.budget C=1.2e+11", ...), a machine-readable `code`, a `severity` and a sentence in
words (`detail`), with the numbers behind it (`numbers`). Codes:

- not_bracketed: an IsoFLOP budget whose minimum the sampled sizes do not bracket on both sides
  (lowest loss at the smallest or largest size, parabola vertex outside the sampled sizes or no
  minimum at all); Approach 2 leaves it out.
- approach2_refused: fewer than two bracketed budgets, so N_opt(C) is not fitted; `numbers` keep
  the exponent an unchecked fit of every vertex would report.
- few_sizes: an IsoFLOP profile with fewer than MIN_PROFILE_SIZES distinct sizes (a parabola
  through 3 or 4 points leaves its minimum next to unchecked).
- at_bound: E at its bound: below E_AT_BOUND of the lowest loss (no floor identified: it
  collapsed towards 0) or within E_AT_BOUND of the lowest loss (the other terms vanish).
- interval_spans_zero, interval_spans_orders: a bootstrap interval that includes both signs, or
  whose ends differ by ORDERS_EXPONENT (an exponent) or ORDERS_SCALE (a scale constant) or more
  orders of magnitude.
- negative_exponent: L(N), L(D) or L(C) rising with its variable, or an Approach 3 exponent
  (alpha, beta) <= 0; exponent_out_of_range: Approach 2's a or b outside (0, 1).
- a_disagree: Approach 2 and Approach 3 differ on a by more than A_TOLERANCE, or their intervals
  do not overlap.

Severity: WARNING for every number not to trust (`jaxlm fit --strict` fails on them); INFO for
a Kaplan power law's E at its bound (the law itself, a pure power law, still describes the
runs in range) and, on IsoFLOP runs, for the intervals of L(N) and L(D) (there the best loss
per size or token budget, which is no law of N or D alone).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from jaxlm.scaling.approach2 import Approach2Fit, fmt_n
from jaxlm.scaling.fit import FamilyFit
from jaxlm.scaling.records import Estimate, Record

WARNING, INFO = "warning", "info"
MAX_FRONTIER_EXPONENT = 5.0  # published L(C) exponents are ~0.05-0.6
MIN_PROFILE_SIZES = 5
E_AT_BOUND = 1e-3  # relative to the lowest loss fitted
# an interval whose ends differ by this many orders of magnitude does not determine its quantity:
# an exponent (alpha, beta, a, b: the result itself) or a scale constant (E, A, B, k, k_D)
ORDERS_EXPONENT, ORDERS_SCALE = 1.0, 2.0
EXPONENTS = ("alpha", "beta", "a", "b")
A_TOLERANCE = 0.1  # Approaches 2 and 3 "agree" on a within this (Chinchilla's: 0.49 vs 0.46)
RISING_HINT = {"N": " (the larger models trained on too few tokens?)",
               "D": " (the longer runs on too small models?)"}
SHORT = {"not_bracketed": "minimum not bracketed", "approach2_refused": "not fitted",
         "few_sizes": "too few sizes", "at_bound": "at its bound",
         "interval_spans_zero": "interval spans zero",
         "interval_spans_orders": "interval spans orders of magnitude",
         "negative_exponent": "negative exponent", "exponent_out_of_range": "outside (0, 1)",
         "a_disagree": "Approaches 2 and 3 disagree on a",
         "holdout_outside": "held-out run outside the prediction band"}


@dataclasses.dataclass(frozen=True)
class Diagnostic(Record):
    """One flag on one fitted quantity. JSON: {code, severity, family, what, detail, numbers}."""

    code: str
    severity: str  # WARNING or INFO
    family: str
    what: str
    detail: str
    numbers: dict = dataclasses.field(default_factory=dict, compare=False)

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    @property
    def short(self) -> str:
        """A few words for a plot: `what: why`."""
        return f"{self.what}: {SHORT.get(self.code, self.code)}"

    def line(self) -> str:
        """One line for a terminal: `severity: family: what: detail`."""
        return f"{self.severity}: {self.family}: {self.what}: {self.detail}"


def _g(x: Optional[float]) -> str:
    return "none" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _iv(e: Estimate) -> str:
    lo, hi = e.interval
    return f"[{_g(lo)}, {_g(hi)}]"


def _interval_flags(fam: str, what: str, e: Optional[Estimate],
                    severity: str = WARNING) -> list[Diagnostic]:
    if e is None or e.interval is None:
        return []
    limit = ORDERS_EXPONENT if what.rsplit(".", 1)[-1] in EXPONENTS else ORDERS_SCALE
    lo, hi = e.interval
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return []
    vals = {"value": e.value, "interval": [lo, hi]}
    if lo < 0 < hi:
        return [Diagnostic("interval_spans_zero", severity, fam, what,
                           f"{what} = {_g(e.value)} has the interval {_iv(e)}, which holds both "
                           "signs: the runs do not fix even its sign", vals)]
    if lo * hi > 0:
        orders = abs(np.log10(hi / lo))
        if orders >= limit:
            return [Diagnostic("interval_spans_orders", severity, fam, what,
                               f"{what} = {_g(e.value)} has the interval {_iv(e)}, "
                               f"{orders:.1f} orders of magnitude wide: not determined",
                               {**vals, "orders": float(orders)})]
    return []


def _e_at_bound(fam: str, what: str, E: Optional[Estimate], loss_min: float,
                severity: str) -> list[Diagnostic]:
    if E is None:
        return []
    vals = {"E": E.value, "lowest_loss": loss_min}
    if E.value < E_AT_BOUND * loss_min:
        return [Diagnostic("at_bound", severity, fam, what,
                           f"E = {_g(E.value)} is at its bound 0 (below {E_AT_BOUND:g} of the "
                           f"lowest loss, {loss_min:.3g}): the runs show no floor, so E and "
                           "everything extrapolated from it are not identified", vals)]
    if E.value > (1 - E_AT_BOUND) * loss_min:
        return [Diagnostic("at_bound", severity, fam, what,
                           f"E = {_g(E.value)} is at its bound, the lowest loss "
                           f"({loss_min:.3g}): the other terms vanish there, so the law is "
                           "not identified", vals)]
    return []


def _budgets(fam: str, fit2: Approach2Fit) -> list[Diagnostic]:
    out = []
    for b in fit2.budgets:
        what = f"approach2.budget C={b.C:.3g}"
        vals = {"C": b.C, "N_min": min(b.N), "N_max": max(b.N), "best_N": b.best_N,
                "N_opt": b.N_opt, "n_sizes": b.n_sizes}
        if not b.bracketed:
            out.append(Diagnostic("not_bracketed", WARNING, fam, what,
                                  f"the IsoFLOP minimum at C={b.C:.3g} is not bracketed by "
                                  f"the sampled sizes ({fmt_n(min(b.N))} to {fmt_n(max(b.N))}): "
                                  f"{b.excluded.removeprefix('not bracketed: ')}; left out of "
                                  "Approach 2", vals))
        if b.n_sizes < MIN_PROFILE_SIZES:
            out.append(Diagnostic("few_sizes", WARNING, fam, what,
                                  f"the IsoFLOP profile at C={b.C:.3g} has {b.n_sizes} sizes; "
                                  f"its parabola's minimum needs at least {MIN_PROFILE_SIZES} "
                                  "to be checked against the runs", vals))
    if not fit2.fitted:
        a_all = fit2.a_all_vertices
        out.append(Diagnostic(
            "approach2_refused", WARNING, fam, "approach2",
            f"N_opt(C) not fitted: {fit2.refused}"
            + ("" if a_all is None else f"; through every parabola vertex, unbracketed "
               f"included, it would give a = {a_all:.3g}, which is not a result"),
            {"n_budgets": fit2.n_budgets, "n_bracketed": fit2.n_bracketed,
             "a_all_vertices": a_all}))
    else:
        for key, e in (("a", fit2.a), ("b", fit2.b)):
            if not 0 < e.value < 1:
                out.append(Diagnostic("exponent_out_of_range", WARNING, fam, f"approach2.{key}",
                                      f"{key} = {_g(e.value)}: compute-optimal N and D both "
                                      "grow with compute only for exponents in (0, 1)",
                                      {"value": e.value}))
        for key in ("a", "k", "b", "k_D"):
            out += _interval_flags(fam, f"approach2.{key}", getattr(fit2, key))
    return out


def _a_disagree(fam: str, f: FamilyFit) -> list[Diagnostic]:
    fit2, a3 = f.approach2, f.approach3.a
    if fit2 is None or (not fit2.fitted and fit2.a_all_vertices is None):
        return []
    a2 = fit2.a if fit2.fitted else Estimate(fit2.a_all_vertices)
    source = ("Approach 2" if fit2.fitted else
              "Approach 2 through every vertex (unbracketed included)")
    gap = abs(a2.value - a3.value)
    ivs = [e.interval for e in (a2, a3)]
    apart = all(iv is not None and all(v is not None and np.isfinite(v) for v in iv)
                for iv in ivs) and (ivs[0][1] < ivs[1][0] or ivs[1][1] < ivs[0][0])
    if gap <= A_TOLERANCE and not apart:
        return []
    return [Diagnostic("a_disagree", WARNING, fam, "approach2/approach3.a",
                       f"{source} gives a = {_g(a2.value)}, Approach 3 a = {_g(a3.value)}"
                       + (f" {_iv(a3)}" if a3.interval is not None else "")
                       + f": they differ by {gap:.2g}"
                       + (", their intervals apart" if apart else f" (> {A_TOLERANCE:g})")
                       + "; neither value of a is a result", {"a2": a2.value, "a3": a3.value})]


def family_diagnostics(fam: str, f: FamilyFit) -> list[Diagnostic]:
    """The diagnostics of one family's fits, in the order of fit.json."""
    # on IsoFLOP runs, L(N) and L(D) take the best loss per size / token budget, which is no law of
    # N or D alone: their uncertain constants are notes, not warnings
    isoflop = f.approach2 is not None
    out: list[Diagnostic] = []
    for key, law in f.power_laws.items():
        out += _e_at_bound(fam, f"{key}.E", law.E, min(law.loss), INFO)
        if law.alpha.value < 0:
            out.append(Diagnostic("negative_exponent", WARNING, fam, f"{key}.alpha",
                                  f"{key} rises with {law.name}: alpha = "
                                  f"{_g(law.alpha.value)} < 0, so it is no law of {law.name}"
                                  + RISING_HINT.get(law.name, ""),
                                  {"value": law.alpha.value}))
        out += _interval_flags(fam, f"{key}.alpha", law.alpha,
                               INFO if isoflop and key in ("L(N)", "L(D)") else WARNING)
        if key == "L(C)" and law.alpha.value > MAX_FRONTIER_EXPONENT:
            out.append(Diagnostic("exponent_out_of_range", WARNING, fam, "L(C).alpha",
                                  f"L(C).alpha = {_g(law.alpha.value)}: no compute frontier falls "
                                  f"this steeply (> {MAX_FRONTIER_EXPONENT}); the fit is "
                                  "degenerate (its E at the lowest loss?)",
                                  {"value": law.alpha.value}))
    if f.approach2 is not None:
        out += _budgets(fam, f.approach2)
    a3 = f.approach3
    out += _e_at_bound(fam, "approach3.E", a3.E, min(a3.loss), WARNING)
    for key in ("alpha", "beta"):
        if getattr(a3, key).value <= 0:
            out.append(Diagnostic("negative_exponent", WARNING, fam, f"approach3.{key}",
                                  f"Approach 3's {key} = {_g(getattr(a3, key).value)} <= 0: "
                                  "loss does not fall with it", {"value": getattr(a3, key).value}))
    for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
        out += _interval_flags(fam, f"approach3.{key}", getattr(a3, key))
    return out + _a_disagree(fam, f) + _holdout_runs(fam, f)


def _holdout_runs(fam: str, f: FamilyFit) -> list[Diagnostic]:
    """Held-out runs (role holdout) whose measured loss lies outside Approach 3's band."""
    h = f.holdout_runs
    if h is None:
        return []
    return [Diagnostic("holdout_outside", WARNING, fam, "approach3.holdout_runs",
                       f"the held-out run {name} measured {h.loss[j]:.4g}, Approach 3 predicted "
                       f"{h.predicted[j]:.4g} ({h.relative_error[j] * 100:+.2f}%), outside its "
                       f"band [{h.band[j][0]:.4g}, {h.band[j][1]:.4g}]: the law does not "
                       "extrapolate to it", {"run": name, "relative_error": h.relative_error[j]})
            for j, name in enumerate(h.names) if h.outside[j]]


def diagnose(fits: Mapping[str, FamilyFit]) -> list[Diagnostic]:
    """Every family's diagnostics, family by family."""
    return [d for fam, f in fits.items() for d in family_diagnostics(fam, f)]


def warnings(diags: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.severity == WARNING]


def plot_notes(diags: list[Diagnostic], family: str, prefix: str) -> list[str]:
    """Short lines for a plot: the family's warnings on quantities starting with `prefix`
    ("approach3", "L(N)", "approach2"); unbracketed budgets counted in one line."""
    mine = [d for d in warnings(diags) if d.family == family and d.what.startswith(prefix)]
    n_out = sum(d.code == "not_bracketed" for d in mine)
    lines = [f"{family}: {n_out} budget(s) not bracketed (hollow): left out"] if n_out else []
    return lines + [f"{family}: {d.short}" for d in mine if d.code != "not_bracketed"]


__all__ = ["Diagnostic", "diagnose", "family_diagnostics", "warnings", "plot_notes", "WARNING",
           "INFO", "MIN_PROFILE_SIZES", "E_AT_BOUND", "ORDERS_EXPONENT", "ORDERS_SCALE",
           "A_TOLERANCE"]
