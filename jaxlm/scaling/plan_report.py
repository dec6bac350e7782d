"""The planner's report: plan.json (machine-readable) and plan.md (words), from the simulated
plans and the predicted wall times (pure: text and dicts out; the CLI writes them)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from jaxlm.scaling.plan import Member
from jaxlm.scaling.planner import FamilyPlan, Width
from jaxlm.scaling.walltime import ALL, Calibration


def plan_json(plans: Sequence[FamilyPlan], members: Sequence[Member],
              times: Optional[Sequence[float]], cal: Optional[Mapping[str, Calibration]],
              settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": settings,
                           "families": {p.family: p.to_json() for p in plans}}
    if cal is not None and times is not None:
        out["wall_time"] = {"calibration": {k: dataclasses.asdict(c) for k, c in cal.items()},
                            "total_s": float(sum(times)),
                            "members": {m.name: round(t, 1) for m, t in zip(members, times)}}
    return out


def _width(w: Width) -> str:
    if w.width is None and w.spread is None:
        return f"| {w.quantity} | {w.truth:.4g} | not fitted | | | {w.fitted:.0%} |"
    unit = "x" if w.log_scale else ""
    fmt = (lambda v: "-" if v is None else f"{v:.3g}{unit}")
    cov = "-" if w.coverage is None else f"{w.coverage:.0%}"
    return (f"| {w.quantity} | {w.truth:.4g} | {fmt(w.width)} | {fmt(w.spread)} | {cov} | "
            f"{w.fitted:.0%} |")


def _family_md(p: FamilyPlan) -> list[str]:
    law = p.law
    lines = [f"## {p.family}", "",
             f"Prior law ({law['source']}): E={law['E']:.4g}, A={law['A']:.4g}, "
             f"B={law['B']:.4g}, alpha={law['alpha']:.4g}, beta={law['beta']:.4g}; seed noise "
             f"sigma={p.sigma:.3g} on log loss; {p.draws} simulated sweeps.", ""]
    if p.skipped:
        return lines + [f"Not simulated: {p.skipped}.", ""]
    if p.budgets:
        lines += ["| budget C | sizes | bracketed | best at smallest | best at largest | "
                  "prior N_opt | suggestion |", "|---|---|---|---|---|---|---|"]
        for b in p.budgets:
            lines.append(f"| {b.budget:.3g} | {b.sizes[0]:,}..{b.sizes[-1]:,} ({len(b.sizes)})"
                         f" | {b.bracketed:.0%} | {b.best_smallest:.0%} | "
                         f"{b.best_largest:.0%} | {b.prior_N_opt:,.0f} | "
                         f"{b.suggestion or 'ok'} |")
        lines.append("")
    lines += [f"Expected intervals (target budget C={p.target_budget:.3g}; N_opt widths as a "
              "factor hi/lo): `width` is the median bootstrap interval a fit would report, "
              "`spread` the range of the estimates over the simulated sweeps, `coverage` how "
              "often the interval holds the prior's value.", "",
              "| quantity | prior value | width | spread | coverage | fitted |",
              "|---|---|---|---|---|---|", *map(_width, p.widths), ""]
    if p.add:
        lines += ["Add (one grid step beyond the edge where the minimum is not bracketed):", ""]
        lines += [f"- `{{params: {a['params']:.3g}}}` (budgets "
                  f"{', '.join(f'{c:.3g}' for c in a['budgets'])}: {a['why']})" for a in p.add]
        lines.append("")
    if p.drop:
        lines += [f"Drop ({len(p.drop)}, never near the minimum): " + ", ".join(p.drop), ""]
    flagged = {k: v for k, v in p.flags.items() if k not in p.drop}
    if flagged:
        lines += ["Flagged members:", ""]
        lines += [f"- {k}: {'; '.join(v)}" for k, v in flagged.items()]
        lines.append("")
    return lines


def plan_markdown(plans: Sequence[FamilyPlan], members: Sequence[Member],
                  times: Optional[Sequence[float]],
                  cal: Optional[Mapping[str, Calibration]]) -> str:
    """plan.md: per family the budgets, expected intervals, proposals; then wall time."""
    lines = ["# Sweep plan (simulated before any compute is spent)", "",
             "Every number below comes from simulated sweeps of this grid under the prior law, "
             "fitted with jaxlm's own fitter (reduced bootstrap): a forecast, not a result. "
             "A law far from the one these models follow gives a wrong forecast.", ""]
    for p in plans:
        lines += _family_md(p)
    if cal is not None and times is not None:
        lines += ["## Predicted wall time", ""]
        for fam, c in cal.items():
            rate = f"{c.flops_per_s:.3g} FLOP/s" if c.flops_per_s != float("inf") else "-"
            who = "every family" if fam == ALL else fam
            lines.append(f"- {who} ({c.source}): {c.compile_s:.1f} s per run (compile, setup, "
                         f"eval) + {c.step_s * 1e3:.2f} ms per step + FLOPs at {rate}.")
        lines += ["",
                  f"Total: {sum(times):,.0f} s ({sum(times) / 60:.1f} min) for {len(members)} "
                  "members, one after another.", "", "| member | steps | C | predicted s |",
                  "|---|---|---|---|"]
        lines += [f"| {m.name} | {m.steps} | {m.flops:.3g} | {t:.1f} |"
                  for m, t in zip(members, times)]
        lines.append("")
    return "\n".join(lines)


def plan_summary(plans: Sequence[FamilyPlan], times: Optional[Sequence[float]]) -> str:
    """A few lines for the terminal."""
    out = []
    for p in plans:
        if p.skipped:
            out.append(f"{p.family}: not simulated: {p.skipped}")
            continue
        br = ", ".join(f"C={b.budget:.3g} {b.bracketed:.0%}" for b in p.budgets)
        out.append(f"{p.family}: bracketed in {br or 'no IsoFLOP budgets'}")
        for w in p.widths:
            if w.width is not None:
                unit = "x" if w.log_scale else ""
                out.append(f"  {w.quantity}: expected interval width {w.width:.3g}{unit}")
        out += [f"  add {{params: {a['params']:.3g}}} to bracket budget(s) "
                f"{', '.join(f'{c:.3g}' for c in a['budgets'])}" for a in p.add]
        if p.drop:
            out.append(f"  drop {len(p.drop)} member(s) never near the minimum")
    if times is not None:
        out.append(f"predicted wall time: {sum(times) / 60:.1f} min")
    return "\n".join(out)


__all__ = ["plan_json", "plan_markdown", "plan_summary"]
