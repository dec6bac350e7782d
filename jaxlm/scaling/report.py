"""Writing a fit's outputs: `fit.json`, `report.md` and PNG plots (runs.csv is read by
jaxlm.scaling.runs_table.read_runs, re-exported here).

Both outputs lead with the fit diagnostics (jaxlm.scaling.diagnostics): fit.json's
"diagnostics" list, and report.md's first section, which says in words which numbers not to
trust and why; its tables mark those numbers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
from typing import Optional

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling import compare as K
from jaxlm.scaling import diagnostics as D
from jaxlm.scaling import approach1 as A1
from jaxlm.scaling import fit as F
from jaxlm.scaling import holdout_runs as H
from jaxlm.scaling import replicates as R
from jaxlm.scaling import tuning as T
from jaxlm.scaling.approach2 import Approach2Fit, fmt_n
from jaxlm.scaling.records import Estimate
from jaxlm.scaling.runs_table import OK_STATUS, read_runs  # noqa: F401 (the public reader)

WARN = "\u26a0"  # marks a number a warning names, in the tables


def fit_runs(data: dict, **kw) -> dict[str, F.FamilyFit]:
    """fit_all for each family; a family's error names the family."""
    out = {}
    for fam, d in data.items():
        try:
            fit = F.fit_all(d["N"], d["D"], d["C"], d["L"], budget=d["budget"],
                            replicate=d.get("seed"), curves=d.get("curves"), **kw)
            held = H.predict_runs(fit.approach3, d.get("holdout_runs"), kw.get("level", F.LEVEL))
            out[fam] = dataclasses.replace(fit, tuning=d.get("tuning"), holdout_runs=held)
        except JaxlmError as e:
            raise JaxlmError(f"family {fam!r}: {e}" if len(data) > 1 else str(e)) from None
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _fmt(c: Optional[Estimate], digits: int = 4) -> str:
    if c is None:
        return "–"
    s = f"{c.value:.{digits}g}"
    iv = c.interval
    if iv and all(v is not None and np.isfinite(v) for v in iv):
        s += f" [{iv[0]:.{digits - 1}g}, {iv[1]:.{digits - 1}g}]"
    return s


def _fmt_at(values: list, intervals: Optional[list], j: int) -> str:
    """Prediction j with its interval (when the prediction has intervals)."""
    return _fmt(Estimate(values[j], None if intervals is None else tuple(intervals[j])), 3)


def _law_alpha(f: F.FamilyFit, key: str) -> Optional[Estimate]:
    return f.power_laws[key].alpha if key in f.power_laws else None


Flagged = set[tuple[str, str]]


def _flagged(diags: list) -> Flagged:
    """(family, quantity) of every warning; a disagreement on a flags both approaches' a, a
    refused Approach 2 its a."""
    out = set()
    for d in D.warnings(diags):
        whats = {"a_disagree": ("approach2.a", "approach3.a"),
                 "approach2_refused": ("approach2", "approach2.a")}.get(d.code, (d.what,))
        out |= {(d.family, w) for w in whats}
    return out


def _mark(text: str, fam: str, what: str, flagged: Flagged) -> str:
    return f"{text} {WARN}" if (fam, what) in flagged else text


def _a2_cell(f: F.FamilyFit) -> str:
    return "–" if f.approach2 is None else (_fmt(f.approach2.a) if f.approach2.fitted
                                            else "not fitted")


def _comparison(fits: dict[str, F.FamilyFit], flagged: Flagged,
                comp: Optional[K.Comparison]) -> list[str]:
    """The families side by side, then their differences (jaxlm.scaling.compare)."""
    fams = list(fits)
    L = ["## Families compared", "",
         "| | " + " | ".join(fams) + " |", "|---" * (len(fams) + 1) + "|"]
    rows = [("runs", "", lambda f: str(f.n_points)),
            ("frontier exponent alpha_C (L(C))", "L(C).alpha",
             lambda f: _fmt(_law_alpha(f, "L(C)"))),
            ("L(N) exponent alpha_N", "L(N).alpha", lambda f: _fmt(_law_alpha(f, "L(N)"))),
            ("L(D) exponent alpha_D", "L(D).alpha", lambda f: _fmt(_law_alpha(f, "L(D)"))),
            ("Approach 3 E", "approach3.E", lambda f: _fmt(f.approach3.E)),
            ("Approach 3 alpha", "approach3.alpha", lambda f: _fmt(f.approach3.alpha)),
            ("Approach 3 beta", "approach3.beta", lambda f: _fmt(f.approach3.beta)),
            ("N_opt ~ C^a (Approach 3)", "approach3.a", lambda f: _fmt(f.approach3.a)),
            ("N_opt ~ C^a (Approach 2)", "approach2.a", _a2_cell)]
    for name, what, fn in rows:
        cells = [_mark(fn(fits[x]), x, what, flagged) for x in fams]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += [""] + (K.markdown(comp) if comp is not None else [])
    return L + ["![loss vs compute](loss_vs_compute.png)", ""]


def _diagnostics(diags: list, fams: list[str]) -> list[str]:
    """The report's first section: in words, which numbers not to trust and why."""
    L = ["## Diagnostics", ""]
    if not diags:
        return L + ["None: every IsoFLOP minimum is bracketed by the sampled sizes, no E sits at "
                    "its bound, no interval spans zero or orders of magnitude, the laws fall with "
                    "N, D and C, and Approaches 2 and 3 agree on a.", ""]
    warn = D.warnings(diags)
    if warn:
        L += [f"**{len(warn)} warning(s): the numbers they name are not results.** The runs do "
              f"not identify them; the tables below mark them {WARN}, and `jaxlm fit --strict` "
              "exits non-zero.", ""]
    for fam in fams:
        mine = [d for d in diags if d.family == fam]
        if not mine:
            continue
        if len(fams) > 1:
            L += [f"### {fam}", ""]
        distrust = list(dict.fromkeys(d.what for d in mine if d.severity == D.WARNING))
        if distrust:
            L += ["Not to trust: " + ", ".join(f"`{w}`" for w in distrust) + ".", ""]
        L += [f"- {'**warning**' if d.severity == D.WARNING else 'note'} `{d.what}`: "
              f"{d.detail}." for d in mine]
        L.append("")
    return L


def _predictions(f: F.FamilyFit) -> list[str]:
    L = ["### Predictions", "", "Approach 3 (C = 6 N D):", "",
         "| C | N_opt | D_opt | loss |", "|---|---|---|---|"]
    p = f.predictions["approach3"]
    for j, c in enumerate(p.C):
        cell = [_fmt_at(p.N_opt, p.N_opt_interval, j), _fmt_at(p.D_opt, p.D_opt_interval, j),
                _fmt_at(p.loss, p.loss_interval, j)]
        L.append(f"| {c:.3g} | " + " | ".join(cell) + " |")
    if "approach2" in f.predictions:
        p = f.predictions["approach2"]
        L += ["", "Approach 2 (C as measured):", "", "| C | N_opt | D_opt |", "|---|---|---|"]
        for j, c in enumerate(p.C):
            L.append(f"| {c:.3g} | {_fmt_at(p.N_opt, p.N_opt_interval, j)} | "
                     f"{_fmt_at(p.D_opt, p.D_opt_interval, j)} |")
    return L


def _side_by_side(f: F.FamilyFit) -> list[str]:
    """Approaches 1, 2 and 3: the exponents and N_opt, D_opt at the largest sampled C."""
    a1, a2, a3 = f.approach1, f.approach2, f.approach3
    c = max(f.predictions["approach3"].C[0], 0.0)  # the largest C in the data
    L = ["### Approaches 1, 2 and 3 side by side", "",
         f"| approach | a (N_opt ~ C^a) | b (D_opt ~ C^b) | N_opt at C = {c:.3g} | D_opt |",
         "|---|---|---|---|---|"]
    for name, fit, key in (("1 (envelope)", a1, "approach1"), ("2 (IsoFLOP)", a2, "approach2"),
                           ("3 (parametric)", a3, "approach3")):
        p = f.predictions.get(key)
        if fit is None or p is None:
            why = f.skipped.get(key, "not fitted") if fit is None else "not fitted"
            L.append(f"| {name} | {why} | | | |")
            continue
        L.append(f"| {name} | {_fmt(fit.a)} | {_fmt(fit.b)} | "
                 f"{_fmt_at(p.N_opt, p.N_opt_interval, 0)} | "
                 f"{_fmt_at(p.D_opt, p.D_opt_interval, 0)} |")
    return L + [""]


def _approach2(a2: Approach2Fit, fam: str, flagged: Flagged, sfx: str) -> list[str]:
    L = ["### Chinchilla Approach 2 (IsoFLOP profiles)", ""]
    if a2.fitted:
        L += [f"{a2.n_bracketed} of {a2.n_budgets} budgets bracketed (the others left out). "
              f"N_opt = k C^a: a = {_mark(_fmt(a2.a), fam, 'approach2.a', flagged)}, "
              f"k = {_mark(_fmt(a2.k), fam, 'approach2.k', flagged)}; D_opt = k_D C^b: "
              f"b = {_mark(_fmt(a2.b), fam, 'approach2.b', flagged)}. {a2.note or ''}"]
    else:
        L += [f"{WARN} **Not fitted**: {a2.refused}."
              + ("" if a2.a_all_vertices is None else " Through every parabola vertex, "
                 f"unbracketed included, a would be {a2.a_all_vertices:.3g}: not a result.")
              + (f" {a2.note}" if a2.note else "")]
    L += ["", "| C | sizes (count) | lowest loss at N | parabola minimum N | used |",
          "|---|---|---|---|---|"]
    for b in sorted(a2.budgets, key=lambda b: b.C):
        L.append(f"| {b.C:.3g} | {fmt_n(min(b.N))} to {fmt_n(max(b.N))} ({b.n_sizes}) | "
                 f"{fmt_n(b.best_N)} | {'none' if b.N_opt is None else fmt_n(b.N_opt)} | "
                 + ("yes |" if b.bracketed else f"no: {b.excluded} |"))
    return L + ["", f"![IsoFLOP profiles](isoflop{sfx}.png)", ""]


def _family(fam: str, f: F.FamilyFit, title: str, sfx: str, flagged: Flagged) -> list[str]:
    """One family's section: Approach 3, the power laws, Approach 2, predictions, holdout."""
    L = [title, "", f"{f.n_points} runs.", ""]
    a3 = f.approach3
    L += ["### Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta", "",
          f"Huber loss (delta = {a3.huber_delta:g}) on log-loss residuals, L-BFGS from "
          f"a grid of initial values; RMSE of log loss {a3.rmse_log_loss:.4f}.", "",
          "| constant | value [interval] |", "|---|---|"]
    L += [f"| {k} | {_mark(_fmt(getattr(a3, k)), fam, f'approach3.{k}', flagged)} |"
          for k in ("E", "A", "B", "alpha", "beta", "a", "b")]
    L += ["", "a = beta/(alpha+beta) and b = alpha/(alpha+beta): N_opt ~ C^a, D_opt ~ C^b.", ""]
    L += ["### Kaplan-style power laws", "", "| law | alpha | A | E | points |",
          "|---|---|---|---|---|"]
    for key in ("L(N)", "L(D)", "L(C)"):
        if key in f.power_laws:
            p = f.power_laws[key]
            L.append(f"| {key} | {_mark(_fmt(p.alpha), fam, f'{key}.alpha', flagged)} | "
                     f"{_fmt(p.A)} | {_fmt(p.E)} | {p.n_points} |")
    L += ["", "L(N) and L(D) use the best loss reached at each size / token budget; L(C) "
          "the compute frontier (runs with lower loss than every run with less compute).", ""]
    if f.approach2 is not None:
        L += _approach2(f.approach2, fam, flagged, sfx)
    if f.approach1 is not None:
        L += A1.markdown(f.approach1)
    L += _side_by_side(f)
    if f.tuning is not None:
        L += T.markdown(f.tuning)
    L += R.markdown(f.seed_noise) if f.seed_noise is not None else []
    L += _predictions(f)
    if f.holdout is not None:
        h = f.holdout
        err = np.abs(np.asarray(h.relative_error))
        L += ["", "### Held-out runs", "",
              f"Approach 3 fitted on the {h.n_train} lowest-compute runs predicts the "
              f"{len(err)} highest-compute ones with mean |relative error| "
              f"{err.mean() * 100:.2f}% (max {err.max() * 100:.2f}%)."]
    if f.holdout_runs is not None:
        L += [""] + H.markdown(f.holdout_runs)
    if f.skipped:
        L += ["", "Not fitted: " + "; ".join(f"{k}: {v}" for k, v in f.skipped.items()) + "."]
    return L + [""]


def markdown(fits: dict[str, F.FamilyFit], source: str, level: float, n_boot: int,
             diags: Optional[list] = None, comparison: Optional[K.Comparison] = None) -> str:
    """report.md: the diagnostics first, then the families compared and each family's fits."""
    diags = D.diagnose(fits) if diags is None else diags
    flagged = _flagged(diags)
    pct = f"{level * 100:g}%"
    L = [f"# Scaling-law fit of `{source}`", "",
         f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Intervals: {pct} "
         f"percentile bootstrap ({n_boot} resamples). N = non-embedding parameters, D = tokens, "
         "C = training FLOPs.", ""]
    one = len(fits) == 1
    L += _diagnostics(diags, list(fits) + ([] if one else ["comparison"]))
    if not one:
        L += _comparison(fits, flagged, comparison)
    for fam, f in fits.items():
        L += _family(fam, f, "## Fits" if one else f"## {fam}", "" if one else f"_{_slug(fam)}",
                     flagged)
    L += ["## Plots", "", "![loss vs compute](loss_vs_compute.png)",
          "![fitted law vs data](law_vs_data.png)", "![held-out runs](holdout.png)", ""]
    return "\n".join(L)


def write_outputs(fits: dict[str, F.FamilyFit], data: dict, outdir, source: str = "runs.csv",
                  level: float = F.LEVEL, n_boot: int = 0, inputs: Optional[dict] = None,
                  comparison: Optional[K.Comparison] = None) -> list:
    """Write fit.json (its "diagnostics" first; with >= 2 families a "comparison"), report.md
    and the PNGs into outdir; returns the written paths."""
    from jaxlm.scaling import plots

    out = pathlib.Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JaxlmError(f"cannot create output directory {out}: {e.strerror}") from None
    written = []
    diags = D.diagnose(fits)
    if comparison is None and len(fits) > 1:
        comparison = K.compare_runs(fits, data, level, (inputs or {}).get("seed", 0), diags)
    diags += comparison.conditions if comparison is not None else []
    doc = {"source": source, "interval_level": level, "bootstrap_resamples": n_boot,
           "settings": inputs or {}, "diagnostics": F.strip_private(diags),
           "families": F.strip_private(fits)}
    if comparison is not None:
        doc["comparison"] = comparison.to_json()
    p = out / "fit.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    tmp.replace(p)
    written.append(p)
    plots.loss_vs_compute(fits, data, out / "loss_vs_compute.png", diags)
    plots.law_vs_data(fits, data, out / "law_vs_data.png", diags)
    plots.holdout(fits, out / "holdout.png")
    written += [out / "loss_vs_compute.png", out / "law_vs_data.png", out / "holdout.png"]
    for fam, f in fits.items():
        if f.approach2 is not None:
            name = "isoflop.png" if len(fits) == 1 else f"isoflop_{_slug(fam)}.png"
            plots.isoflop_curves(f.approach2, out / name, "" if len(fits) == 1 else fam,
                                 D.plot_notes(diags, fam, "approach2"))
            written.append(out / name)
    (out / "report.md").write_text(markdown(fits, source, level, n_boot, diags, comparison),
                                   encoding="utf-8")
    written.append(out / "report.md")
    return written


__all__ = ["read_runs", "fit_runs", "write_outputs", "markdown", "OK_STATUS"]
