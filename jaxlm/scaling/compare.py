"""Comparing families (architectures) fitted on one sweep: differences with bootstrap intervals
(pure numpy: fit records in, typed records out; no I/O).

Each family's fits (jaxlm.scaling.fit.fit_all) already hold their bootstrap draws: every draw
resamples the family's (N, D) cells with replacement, then the seeds within each drawn cell
(jaxlm.scaling.replicates: without replicate seeds a cell is one run, so it resamples runs),
and refits. Families are independent samples, so a draw of a difference pairs draw i of one
family with draw i of the other, after a random permutation of each family's draws (the
families' bootstraps use the same seed; unpermuted, equal grids would draw the same rows for
both) and truncated to the same number of draws per family. A difference's interval is the
percentile interval of its paired draws; its two-sided p-value is twice the smaller share of
draws on either side of the null (0 for a difference, 1 for a ratio); `significant` means the
interval excludes the null.

Quantities, each family against the first (the reference), `other` minus / over `reference`:

- frontier_gap: L_other(C) / L_ref(C) - 1 of the fitted compute frontiers L(C) = E + A/C^alpha
  at the reference compute C_ref, the largest compute both families cover (the smaller of their
  largest budgets; it must lie above both smallest ones), and at each budget in the common range
  (`per_budget`). The fitted frontier is used rather than the best run per budget because it is
  defined for families whose budgets differ, and it pools every frontier run.
- alpha_C: the difference of the frontier exponents.
- approach3.a, approach2.a: the difference of N_opt ~ C^a exponents.
- N_opt_ratio.approach3, N_opt_ratio.approach2: N_opt,other(C_ref) / N_opt,ref(C_ref) (Approach
  3 with C = 6 N D; Approach 2 with C as measured).

A quantity is refused ("not identified", with the reason) when either family's fit of it has a
warning-level diagnostic (jaxlm.scaling.diagnostics): an unbracketed IsoFLOP minimum, too few
sizes or a refused Approach 2 rule out the Approach 2 comparisons; E at its bound, an interval
spanning zero or orders of magnitude or Approaches 2 and 3 disagreeing on a rule out the
Approach 3 ones. `conditions_check` flags families trained under different data, tokenizer,
sequence length or FLOP rule (runs.csv columns), which makes any comparison unfair.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from jaxlm.scaling.approach3 import optimal_nd
from jaxlm.scaling.diagnostics import WARNING, INFO, Diagnostic, diagnose, warnings
from jaxlm.scaling.fit import FamilyFit
from jaxlm.scaling.records import Estimate, Record
from jaxlm.scaling.stats import LEVEL, group_by_tolerance, interval

CONDITION_COLUMNS = ("corpus", "tokenizer", "seq_len", "flops_rule")
RATIOS = ("N_opt_ratio.approach3", "N_opt_ratio.approach2")
WORDS = {"frontier_gap": "frontier loss gap (relative)",
         "frontier_gap.approach3": "compute-optimal loss gap (Approach 3, relative)", "alpha_C": "frontier exponent alpha_C",
         "approach3.a": "Approach 3 exponent a", "approach2.a": "Approach 2 exponent a",
         "N_opt_ratio.approach3": "N_opt ratio (Approach 3)",
         "N_opt_ratio.approach2": "N_opt ratio (Approach 2)"}


@dataclasses.dataclass(frozen=True)
class Difference(Record):
    """One quantity of `family` against `reference`: a difference (null 0) or ratio (null 1).
    estimate None: not identified (`reason` says why) or no bootstrap."""

    quantity: str
    reference: str
    family: str
    scale: str  # "relative" (other/ref - 1), "difference" (other - ref) or "ratio" (other/ref)
    estimate: Optional[Estimate] = None
    p_value: Optional[float] = None  # two-sided bootstrap p-value
    significant: Optional[bool] = None  # the interval excludes the null
    n_draws: int = 0
    C: Optional[float] = None  # the compute it is evaluated at
    reason: Optional[str] = None  # why it is not identified
    per_budget: Optional[list] = None  # frontier_gap: [{"C", "value", "interval"}]

    @property
    def identified(self) -> bool:
        return self.reason is None

    @property
    def null(self) -> float:
        return 1.0 if self.scale == "ratio" else 0.0

    def _items(self) -> list[tuple[str, Any]]:
        items = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]
        return [("identified", self.identified)] + [(k, v) for k, v in items if v is not None]


@dataclasses.dataclass(frozen=True)
class Comparison(Record):
    """Every family against the first: differences, and the identical-conditions check."""

    reference: str
    families: list[str]
    level: float
    reference_C: dict  # family -> C_ref (None: compute ranges do not overlap)
    differences: list[Difference]
    conditions: list[Diagnostic]
    method: str = ("hierarchical bootstrap ((N, D) cells, then seeds within each), families "
                   "independent: draws paired after a random permutation")

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def _paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Draws of two independent families, each permuted, truncated to the same count."""
    n = min(len(a), len(b))
    return a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]


def _summary(value: float, draws: Optional[np.ndarray], level: float) -> dict:
    """Estimate, p-value and significance of a difference (of logs, for a ratio or relative
    gap: `_back` maps it back)."""
    if draws is None:
        return {"estimate": Estimate(float(value)), "n_draws": 0}
    s = np.asarray(draws, np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return {"estimate": Estimate(float(value)), "n_draws": int(s.size)}
    lo, hi = interval(s, level)
    p = float(min(1.0, 2 * min((s <= 0).mean(), (s >= 0).mean())))
    return {"estimate": Estimate(float(value), (lo, hi)), "p_value": max(p, 1.0 / s.size),
            "significant": bool(lo > 0 or hi < 0), "n_draws": int(s.size)}


def _back(summary: dict, fn) -> dict:
    """A log-scale summary mapped back (exp for a ratio, expm1 for a relative gap)."""
    e = summary["estimate"]
    iv = None if e.interval is None else tuple(float(fn(v)) for v in e.interval)
    return {**summary, "estimate": Estimate(float(fn(e.value)), iv)}


def frontier_logs(fit, C: np.ndarray) -> tuple[float, Optional[np.ndarray]]:
    """log L(C) of a frontier fit at C (m,): the fit (m,) and its draws (n_boot, m)."""
    E = fit.E.value if fit.E is not None else 0.0
    point = np.log(E + fit.A.value * C ** -fit.alpha.value)
    if fit.boot is None or len(fit.boot) < 2:
        return point, None
    la, al, le = (fit.boot[:, i:i + 1] for i in range(3))
    with np.errstate(all="ignore"):
        return point, np.logaddexp(la - al * np.log(C), le)


def _flags(fam: str, diags: list[Diagnostic], prefixes: Sequence[str],
           codes: Sequence[str] = ()) -> list[str]:
    return [f"{fam}: {d.detail}" for d in warnings(diags) if d.family == fam
            and (d.what.startswith(tuple(prefixes)) or d.code in codes)]


def _refusal(flags: list[str]) -> Optional[str]:
    if not flags:
        return None
    more = f" (and {len(flags) - 1} more warning(s))" if len(flags) > 1 else ""
    return "not identified: " + flags[0] + more


def common_compute(Ca: np.ndarray, Cb: np.ndarray) -> Optional[float]:
    """The largest compute both families cover (None: their ranges do not overlap)."""
    hi, lo = min(np.max(Ca), np.max(Cb)), max(np.min(Ca), np.min(Cb))
    return float(hi) if hi >= lo else None


def frontier_gap(ref: tuple, other: tuple, C: np.ndarray, rng: np.random.Generator,
                 level: float = LEVEL) -> dict:
    """Difference fields of L_other(C)/L_ref(C) - 1 at C[0] (`per_budget`: at C[1:]) from each
    family's (log L at C (m,), its bootstrap draws (n_boot, m) or None)."""
    (pa, ba), (pb, bb) = ref, other
    draws = None
    if ba is not None and bb is not None:
        ba, bb = _paired(ba, bb, rng)
        draws = bb - ba
    out = [_back(_summary(pb[j] - pa[j], None if draws is None else draws[:, j], level),
                 np.expm1) for j in range(C.size)]
    per = [{"C": float(c), "value": o["estimate"].value, "interval": o["estimate"].interval}
           for c, o in zip(C[1:], out[1:])]
    return {**out[0], "C": float(C[0]), "per_budget": per}


def approach3_frontier_logs(fit3, C: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """log of Approach 3's loss at the compute-optimal N, D (C = 6 N D) (m,), and its draws
    (n_boot, m) or None."""
    point = np.log(optimal_nd(fit3.theta[None], C)[2][0])
    if fit3.boot is None or len(fit3.boot) < 2:
        return point, None
    with np.errstate(all="ignore"):
        return point, np.log(optimal_nd(fit3.boot, C)[2])


def scalar_difference(va: float, vb: float, da: Optional[np.ndarray], db: Optional[np.ndarray],
                      rng: np.random.Generator, level: float = LEVEL, log: bool = False) -> dict:
    """Difference fields of vb - va (log: vb / va, through logs) from each family's draws."""
    f = np.log if log else (lambda v: v)
    draws = None
    if da is not None and db is not None and len(da) > 1 and len(db) > 1:
        da, db = _paired(np.asarray(da, np.float64), np.asarray(db, np.float64), rng)
        with np.errstate(all="ignore"):
            draws = f(db) - f(da)
    s = _summary(f(vb) - f(va), draws, level)
    return _back(s, np.exp) if log else s


def _budgets_between(fa: FamilyFit, fb: FamilyFit, C_ref: float) -> list[float]:
    """The frontier budgets of both families within the common range, merged within 25%."""
    lo = max(min(fa.power_laws["L(C)"].x), min(fb.power_laws["L(C)"].x))
    c = np.asarray([x for f in (fa, fb) for x in f.power_laws["L(C)"].x if lo <= x <= C_ref])
    if c.size == 0:
        return []
    g = group_by_tolerance(c, 0.25)
    return [float(np.exp(np.log(c[g == k]).mean())) for k in np.unique(g)]


def _a3_nopt(f: FamilyFit, C: float) -> tuple[float, Optional[np.ndarray]]:
    point = float(optimal_nd(f.approach3.theta[None], np.asarray([C]))[0][0, 0])
    boot = f.approach3.boot
    if boot is None:
        return point, None
    with np.errstate(all="ignore"):
        return point, optimal_nd(boot, np.asarray([C]))[0][:, 0]


def _a2_nopt(f: FamilyFit, C: float) -> tuple[float, Optional[np.ndarray]]:
    a2 = f.approach2
    point = float(a2.k.value * C ** a2.a.value)
    if a2.boot is None:
        return point, None
    with np.errstate(all="ignore"):
        return point, np.exp(a2.boot[:, 1] + a2.boot[:, 0] * np.log(C))


def _pair(ref: str, fam: str, fa: FamilyFit, fb: FamilyFit, C_ref: Optional[float],
          diags: list[Diagnostic], rng: np.random.Generator, level: float) -> list[Difference]:
    """Every quantity of `fam` against `ref`."""
    out = []

    def add(q: str, scale: str, why: Optional[str], fn) -> None:
        got = {} if why is not None else fn()
        if why is None and not np.isfinite(got["estimate"].value):  # a degenerate fit
            why = "not identified: its point estimate is not finite"
        out.append(Difference(q, ref, fam, scale, reason=why) if why is not None
                   else Difference(q, ref, fam, scale, **got))

    front = "L(C)" in fa.power_laws and "L(C)" in fb.power_laws
    no_front = (None if front else "not identified: " + "; ".join(
        f"{x}: {f.skipped.get('L(C)', 'no compute frontier')}"
        for x, f in ((ref, fa), (fam, fb)) if "L(C)" not in f.power_laws))
    no_c = "not identified: the families' compute ranges do not overlap"
    cs = (None if C_ref is None or not front else
          np.asarray([C_ref, *_budgets_between(fa, fb, C_ref)]))
    flagged_c = _refusal(_flags(ref, diags, ["L(C)."]) + _flags(fam, diags, ["L(C)."]))
    add("frontier_gap", "relative", no_front or (no_c if C_ref is None else None) or flagged_c,
        lambda: frontier_gap(frontier_logs(fa.power_laws["L(C)"], cs),
                             frontier_logs(fb.power_laws["L(C)"], cs), cs, rng, level))
    law = (lambda f: f.power_laws["L(C)"])
    add("alpha_C", "difference", no_front or flagged_c,
        lambda: scalar_difference(law(fa).alpha.value, law(fb).alpha.value,
                                  None if law(fa).boot is None else law(fa).boot[:, 1],
                                  None if law(fb).boot is None else law(fb).boot[:, 1], rng,
                                  level))
    why3 = _refusal(_flags(ref, diags, ["approach3."], ["a_disagree"])
                    + _flags(fam, diags, ["approach3."], ["a_disagree"]))
    cs3 = cs if cs is not None else (None if C_ref is None else np.asarray([C_ref]))
    a3 = (lambda f: None if f.approach3.boot is None else
          f.approach3.boot[:, 4] / (f.approach3.boot[:, 3] + f.approach3.boot[:, 4]))
    add("frontier_gap.approach3", "relative", why3 or (no_c if C_ref is None else None),
        lambda: frontier_gap(approach3_frontier_logs(fa.approach3, cs3),
                             approach3_frontier_logs(fb.approach3, cs3), cs3, rng, level))
    add("approach3.a", "difference", why3,
        lambda: scalar_difference(fa.approach3.a.value, fb.approach3.a.value, a3(fa), a3(fb),
                                  rng, level))
    missing2 = [f"{x}: Approach 2 " + (f.skipped.get("approach2", "not fitted")
                                       if f.approach2 is None else f"not fitted: {f.approach2.refused}")
                for x, f in ((ref, fa), (fam, fb)) if f.approach2 is None or not f.approach2.fitted]
    why2 = (_refusal(missing2) or _refusal(_flags(ref, diags, ["approach2"], ["a_disagree"])
                                           + _flags(fam, diags, ["approach2"], ["a_disagree"])))
    a2 = (lambda f: None if f.approach2.boot is None else f.approach2.boot[:, 0])
    add("approach2.a", "difference", why2,
        lambda: scalar_difference(fa.approach2.a.value, fb.approach2.a.value, a2(fa), a2(fb),
                                  rng, level))
    def ratio(fn) -> dict:
        (va, da), (vb, db) = fn(fa, C_ref), fn(fb, C_ref)
        return {**scalar_difference(va, vb, da, db, rng, level, log=True), "C": C_ref}

    for q, why, fn in (("N_opt_ratio.approach3", why3, _a3_nopt),
                       ("N_opt_ratio.approach2", why2, _a2_nopt)):
        add(q, "ratio", why or (no_c if C_ref is None else None), lambda fn=fn: ratio(fn))
    return out


def compare(fits: Mapping[str, FamilyFit], C: Optional[Mapping[str, np.ndarray]] = None,
            conditions: Optional[Mapping[str, Mapping[str, set]]] = None,
            level: float = LEVEL, seed: int = 0,
            diags: Optional[list[Diagnostic]] = None) -> Comparison:
    """Every family against the first. C: each family's run compute (default: its frontier's);
    conditions: per family, per CONDITION_COLUMNS column, the set of values its runs hold."""
    fams = list(fits)
    diags = diagnose(fits) if diags is None else diags
    rng = np.random.default_rng(seed)
    ref, fa = fams[0], fits[fams[0]]
    comp = C or {k: np.asarray(f.power_laws["L(C)"].x) if "L(C)" in f.power_laws
                 else np.asarray([np.nan]) for k, f in fits.items()}
    out, c_refs = [], {}
    for fam in fams[1:]:
        c_ref = common_compute(np.asarray(comp[ref]), np.asarray(comp[fam]))
        c_refs[fam] = None if c_ref is None or not np.isfinite(c_ref) else c_ref
        out += _pair(ref, fam, fa, fits[fam], c_refs[fam], diags, rng, level)
    return Comparison(reference=ref, families=fams, level=level, reference_C=c_refs,
                      differences=out, conditions=conditions_check(conditions or {}))


def compare_runs(fits: Mapping[str, FamilyFit], data: Mapping[str, dict], level: float = LEVEL,
                 seed: int = 0, diags: Optional[list[Diagnostic]] = None) -> Comparison:
    """`compare` on report.read_runs' data: each family's run compute and conditions."""
    return compare(fits, {k: data[k]["C"] for k in fits},
                   {k: data[k].get("conditions", {}) for k in fits}, level, seed, diags)


def conditions_check(conditions: Mapping[str, Mapping[str, set]]) -> list[Diagnostic]:
    """Warnings for families trained under different data, tokenizer, seq_len or FLOP rule;
    a note when runs.csv does not say (older sweeps, other CSVs)."""
    fams = list(conditions)
    if len(fams) < 2:
        return []
    out, unknown = [], []
    for col in CONDITION_COLUMNS:
        vals = {f: {v for v in conditions[f].get(col, set()) if v} for f in fams}
        if not all(vals.values()):
            unknown.append(col)
            continue
        if len(set().union(*vals.values())) > 1:
            said = "; ".join(f"{f}: {', '.join(sorted(v))}" for f, v in vals.items())
            out.append(Diagnostic(
                "conditions_differ", WARNING, "comparison", f"families.{col}",
                f"the families were trained with different {col} ({said}): their difference "
                "mixes that with the architecture, so the comparison is not fair",
                {f: sorted(v) for f, v in vals.items()}))
    if unknown:
        out.append(Diagnostic("conditions_unknown", INFO, "comparison", "families",
                              f"runs.csv does not say every family's {', '.join(unknown)}: "
                              "that the families share them is not checked", {}))
    return out


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def sentence(d: Difference) -> str:
    """One difference in words."""
    if not d.identified:
        return f"{WORDS[d.quantity]}, {d.family} vs {d.reference}: {d.reason}."
    e = d.estimate
    iv = e.interval
    verdict = ("no interval (no bootstrap)" if iv is None else
               ("significant" if d.significant else "not significant")
               + (f" (p = {d.p_value:.2g})" if d.p_value is not None else ""))
    at = "" if d.C is None else f" at C = {d.C:.3g}"
    if d.quantity.startswith("frontier_gap"):
        side = "lower" if e.value < 0 else "higher"
        ivs = "" if iv is None else f" [{_pct(iv[0])}, {_pct(iv[1])}]"
        how = "" if d.quantity == "frontier_gap" else " (Approach 3's compute-optimal loss)"
        return (f"The {d.family} frontier{how} is {side} than the {d.reference} frontier by "
                f"{abs(e.value) * 100:.1f}% (gap {_pct(e.value)}{ivs}){at}: {verdict}.")
    ivs = "" if iv is None else f" [{iv[0]:.3g}, {iv[1]:.3g}]"
    if d.scale == "ratio":
        return (f"N_opt of {d.family} / N_opt of {d.reference}{at} "
                f"({d.quantity.split('.')[-1].replace('approach', 'Approach ')}): "
                f"{e.value:.3g}{ivs}: {verdict}.")
    return (f"{WORDS[d.quantity]}: {d.family} minus {d.reference} = {e.value:+.3g}{ivs}: "
            f"{verdict}.")


def markdown(comp: Comparison) -> list[str]:
    """report.md's lines on the differences (under "Families compared")."""
    pct = f"{comp.level * 100:g}%"
    L = [f"### Differences against {comp.reference}", "",
         f"{pct} intervals from a {comp.method}; significant: the interval excludes 0 (1 for "
         "a ratio). Quantities a family's diagnostics flag are not compared.", ""]
    L += [f"- {sentence(d)}" for d in comp.differences]
    for d in comp.differences:
        if d.per_budget:
            L += ["", f"{WORDS[d.quantity]} of {d.family} against {d.reference} per budget:", "",
                  "| C | gap [interval] |", "|---|---|"]
            L += [f"| {b['C']:.3g} | {_pct(b['value'])}"
                  + ("" if b["interval"] is None else
                     f" [{_pct(b['interval'][0])}, {_pct(b['interval'][1])}]") + " |"
                  for b in d.per_budget]
    if comp.conditions:
        L += [""] + [f"- {'**warning**' if c.severity == WARNING else 'note'}: {c.detail}."
                     for c in comp.conditions]
    return L + [""]


__all__ = ["sentence", "markdown", "Difference", "Comparison", "compare", "compare_runs",
           "conditions_check", "frontier_gap", "scalar_difference", "common_compute",
           "frontier_logs", "approach3_frontier_logs", "CONDITION_COLUMNS", "WORDS", "RATIOS"]
