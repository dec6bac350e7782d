"""PNG plots of the scaling fits (matplotlib).

Each function takes `{family: FamilyFit}` (fit_all's results) and a path, writes one figure and
returns it. Figures are made with matplotlib's object API on an Agg canvas, not pyplot: no
display is needed, and the backend of a notebook importing this module (its inline plots) is
left alone.

What a plot claims is what the runs support: a fitted curve is drawn solid only over the range
of the points it was fitted to; its continuation past the largest run is dashed and labelled
"extrapolation"; an IsoFLOP budget whose minimum the sampled sizes do not bracket gets a
hollow marker at the edge of the sampled range ("not bracketed"), not a minimum drawn as a
result, and N_opt(C) is drawn only when fitted (to bracketed minima). The fit diagnostics
(jaxlm.scaling.diagnostics) are written on the axes that show the quantities they name.
Budgets are coloured along one sequential colormap in the order of their compute, with a
colorbar. Log-axis tick labels are thinned until none overlaps another."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxlm.scaling import diagnostics as D
from jaxlm.scaling.fit import Approach2Fit, FamilyFit, approach3_eval, power_law_eval

COLORS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
BUDGET_CMAP = "viridis"  # sequential: dark = small compute budget, light = large
EXTRAPOLATE = 10.0  # fitted laws of C continue (dashed) to this factor past the largest run
DPI = 110
EXTRAPOLATION = "extrapolation"  # the legend label (and gid) of a law's dashed continuation
NOT_BRACKETED = "minimum not bracketed by the sampled sizes (left out)"
DIAGNOSTIC_COLOR = "#b00000"
# major ticks of a log axis, densest first: the first whose labels do not overlap is kept
_LOG_SUBS = ((1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0),
             (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0), (1.0, 2.0, 3.0, 5.0, 7.0),
             (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))
LABEL_GAP_PX = 3  # the least room between two tick labels


def _figure(*grid: int, figsize: tuple[float, float]):
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)  # drawable without pyplot: the layout below measures the labels
    return fig, fig.subplots(*grid)


def _save(fig: Figure, path) -> Figure:
    # tick labels depend on the axes' size and the size on the labels: lay out, thin, again
    for _ in range(2):
        fig.tight_layout()
        tidy_log_ticks(fig)
    fig.savefig(path, dpi=DPI)
    return fig


def tick_label(v: float, _pos=None) -> str:
    """A log-axis tick: plain below 10^4 (losses, small N), else m x 10^e."""
    if not np.isfinite(v) or v <= 0:
        return ""
    if 1e-2 <= v < 1e4:
        return f"{v:g}"
    e = int(np.floor(np.log10(v) + 1e-9))
    m = f"{v / 10 ** e:.3g}"
    return f"$10^{{{e}}}$" if m == "1" else f"${m}\\times10^{{{e}}}$"


def visible_tick_labels(axis) -> list:
    """The non-empty tick labels (major and minor) an axis draws inside its view."""
    lo, hi = sorted(axis.get_view_interval())
    tol = (hi - lo) * 1e-9
    out = []
    for locs, labels in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                         (axis.get_minorticklocs(), axis.get_minorticklabels())):
        out += [t for v, t in zip(locs, labels)
                if lo - tol <= v <= hi + tol and t.get_visible() and t.get_text()]
    return out


def _overlap(labels: list, renderer) -> bool:
    boxes = [t.get_window_extent(renderer).padded(LABEL_GAP_PX / 2)
             for t in labels]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def tidy_log_ticks(fig) -> None:
    """On every log axis of a laid-out figure (any canvas that draws, e.g. a notebook's inline
    one): unlabelled minor ticks, and major ticks at the densest of _LOG_SUBS whose labels do
    not overlap, measured on the drawn figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            axis.set_major_formatter(ticker.FuncFormatter(tick_label))
            axis.set_minor_formatter(ticker.NullFormatter())
            for subs in _LOG_SUBS:
                axis.set_major_locator(ticker.LogLocator(subs=subs, numticks=12))
                if not _overlap(visible_tick_labels(axis), renderer):
                    break
            else:  # even powers of ten collide (a very narrow axis): every n-th decade
                axis.set_major_locator(ticker.LogLocator(subs=(1.0,), numticks=3))


def _law_line(ax, law, lo: float, hi: float, color, label: str, extend: float = 1.0) -> None:
    """A fitted law solid over [lo, hi] (its points' range), then dashed to hi * extend."""
    xs = np.geomspace(lo, hi, 80)
    ax.plot(xs, law(xs), color=color, label=label, gid="fit")
    if extend > 1:
        first = EXTRAPOLATION not in ax.get_legend_handles_labels()[1]
        xe = np.geomspace(hi, hi * extend, 40)
        ax.plot(xe, law(xe), color=color, ls="--", gid=EXTRAPOLATION,
                label=EXTRAPOLATION if first else "_nolegend_")


def _notes(ax, notes: Sequence[str]) -> None:
    """The diagnostics of what an axes shows, in its lower left corner (gid "diagnostics"),
    under the data (zorder 1): a point there stays visible."""
    if notes:
        ax.text(0.02, 0.02, "\n".join(f"! {n}" for n in notes), transform=ax.transAxes,
                fontsize=6, color=DIAGNOSTIC_COLOR, ha="left", va="bottom", gid="diagnostics",
                zorder=1, bbox=dict(facecolor="white", edgecolor=DIAGNOSTIC_COLOR, alpha=0.7))


def _family_notes(diags, fits, prefix: str) -> list[str]:
    return [n for fam in fits for n in D.plot_notes(diags, fam, prefix)]


def loss_vs_compute(fits: dict[str, FamilyFit], data: dict, path,
                    diags: Optional[list] = None) -> Figure:
    """All runs' loss against training FLOPs, the compute frontier and its fitted power law;
    the frontier law's diagnostics (`diags`: computed from the fits when None) noted."""
    fig, ax = _figure(figsize=(6.4, 4.4))
    for i, (fam, f) in enumerate(fits.items()):
        c, C, L = COLORS[i % len(COLORS)], data[fam]["C"], data[fam]["L"]
        ax.scatter(C, L, s=12, alpha=0.35, color=c, label=f"{fam} runs")
        law = f.power_laws.get("L(C)")
        if law is not None:
            idx = np.asarray(law.index)
            ax.scatter(C[idx], L[idx], s=28, color=c, edgecolor="k", zorder=3)
            x = np.asarray(law.x)
            _law_line(ax, lambda v, law=law: power_law_eval(law, v), x.min(), x.max(), c,
                      f"{fam} frontier fit, alpha_C={law.alpha.value:.3f}", EXTRAPOLATE)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="loss",
           title="Loss vs compute, with the compute frontier")
    ax.legend(fontsize=7)
    _notes(ax, _family_notes(D.diagnose(fits) if diags is None else diags, fits, "L(C)"))
    return _save(fig, path)


def unbracketed_marker(b) -> tuple[float, str]:
    """Where an unbracketed budget's hollow marker goes: (N, marker). At the edge of the
    sampled sizes its minimum lies beyond ("<" below the smallest, ">" above the largest), or at
    the lowest-loss size ("o") when the parabola has no minimum and that size is interior."""
    lo, hi = min(b.N), max(b.N)
    if b.N_opt is not None and not lo < b.N_opt < hi:
        return (lo, "<") if b.N_opt <= lo else (hi, ">")
    if b.best_N in (lo, hi):
        return (lo, "<") if b.best_N == lo else (hi, ">")
    return b.best_N, "o"


def isoflop_curves(fit2: Approach2Fit, path, family: str = "",
                   notes: Sequence[str] = ()) -> Figure:
    """Loss vs N per IsoFLOP budget (coloured by budget), the fitted parabolas over each
    budget's sampled sizes and their bracketed minima (unbracketed ones hollow); then N_opt
    against C, fitted to the bracketed minima, and `notes` (the diagnostics) on it."""
    fig, (ax, ax2) = _figure(1, 2, figsize=(10.5, 4.2))
    budgets = sorted(fit2.budgets, key=lambda b: b.C)
    norm = LogNorm(budgets[0].C, budgets[-1].C) if len(budgets) > 1 else None
    mappable = ScalarMappable(norm=norm, cmap=BUDGET_CMAP)
    if norm is None:
        mappable.set_clim(budgets[0].C / 2, budgets[0].C * 2)
    for b in budgets:
        c = mappable.to_rgba(b.C)
        N, L = np.asarray(b.N), np.asarray(b.loss)
        ax.scatter(N, L, s=12, color=c)
        xs = np.geomspace(N.min(), N.max(), 60)
        ax.plot(xs, np.polyval(b.parabola_in_log_N, np.log(xs)), color=c, lw=1,
                label=f"C={b.C:.3g}", gid="budget")
        if not b.bracketed:  # hollow, at the edge it lies beyond, pointing at it
            x, marker = unbracketed_marker(b)
            ax.scatter([x], [np.polyval(b.parabola_in_log_N, np.log(x))], marker=marker, s=70,
                       facecolor="none", edgecolor=c, linewidths=1.5, zorder=3,
                       gid="not bracketed")
        else:
            ax.scatter([b.N_opt], [b.loss_at_N_opt], marker="*", s=90, color=c,
                       edgecolor="k", zorder=3, gid="minimum")
    fig.colorbar(mappable, ax=ax, label="compute budget C (FLOPs)", pad=0.02)
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="loss",
           title=f"IsoFLOP profiles {family}".strip())
    handles = [Line2D([], [], ls="", marker="*", ms=9, color="grey", mec="k",
                      label="parabola minimum (bracketed)")]
    if any(not b.bracketed for b in budgets):
        handles.append(Line2D([], [], ls="", marker="<", ms=7, mfc="none", color="grey",
                              label=NOT_BRACKETED))
    ax.legend(handles=handles, fontsize=6)
    found = [b for b in budgets if b.N_opt is not None]
    Cs = np.asarray([b.C for b in found])
    inside = np.asarray([b.bracketed for b in found], dtype=bool)
    Ns = np.asarray([b.N_opt for b in found])
    if inside.any():
        ax2.scatter(Cs[inside], Ns[inside], color="k", zorder=3, label="bracketed minima")
    if (~inside).any():
        ax2.scatter(Cs[~inside], Ns[~inside], facecolor="none", edgecolor="k", zorder=3,
                    label=NOT_BRACKETED)
    if fit2.fitted:
        k, a = fit2.k.value, fit2.a.value
        _law_line(ax2, lambda C: k * C ** a, Cs[inside].min(), Cs[inside].max(), COLORS[0],
                  f"N_opt = {k:.3g} C^{a:.3f}", EXTRAPOLATE)
    else:
        ax2.text(0.5, 0.6, "N_opt(C) not fitted:\n" + fit2.refused.replace(" (need", "\n(need"),
                 transform=ax2.transAxes, ha="center", va="center", fontsize=8,
                 color=DIAGNOSTIC_COLOR, gid="not fitted")
    ax2.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="N_opt",
            title="Approach 2: compute-optimal size")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    _notes(ax2, notes)
    return _save(fig, path)


def law_vs_data(fits: dict[str, FamilyFit], data: dict, path,
                diags: Optional[list] = None) -> Figure:
    """Approach 3 (predicted vs observed) and the Kaplan L(N), L(D) fits against the data, each
    with its diagnostics (`diags`: computed from the fits when None)."""
    fig, axes = _figure(1, 3, figsize=(14, 4.2))
    for i, (fam, f) in enumerate(fits.items()):
        c, d = COLORS[i % len(COLORS)], data[fam]
        pred = approach3_eval(f.approach3.theta, d["N"], d["D"])
        axes[0].scatter(d["L"], pred, s=10, color=c, alpha=0.6, label=fam)
        for ax, key, x in ((axes[1], "L(N)", d["N"]), (axes[2], "L(D)", d["D"])):
            ax.scatter(x, d["L"], s=8, alpha=0.25, color=c)
            law = f.power_laws.get(key)
            if law is not None:
                idx = np.asarray(law.index)
                ax.scatter(x[idx], d["L"][idx], s=22, color=c, edgecolor="k")
                fitted = np.asarray(law.x)
                _law_line(ax, lambda v, law=law: power_law_eval(law, v), fitted.min(),
                          fitted.max(), c, f"{fam}: alpha={law.alpha.value:.3f}")
    lo = min(d["L"].min() for d in data.values())
    hi = max(d["L"].max() for d in data.values())
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=1, gid="reference", label="_nolegend_")
    axes[0].set(xlabel="observed loss", ylabel="Approach 3 prediction",
                title="L(N,D) = E + A/N^a + B/D^b")
    axes[1].set(xscale="log", yscale="log", xlabel="N", ylabel="loss",
                title="L(N): best loss per size")
    axes[2].set(xscale="log", yscale="log", xlabel="tokens D", ylabel="loss",
                title="L(D): best loss per token budget")
    diags = D.diagnose(fits) if diags is None else diags
    for ax, prefix in zip(axes, ("approach3", "L(N)", "L(D)")):
        if ax.get_legend_handles_labels()[1]:  # a family without that fit draws no labelled line
            ax.legend(fontsize=7)
        _notes(ax, _family_notes(diags, fits, prefix))
    return _save(fig, path)


def holdout(fits: dict[str, FamilyFit], path) -> Figure:
    """Held-out (largest-compute) runs against the prediction of a fit made without them."""
    fig, ax = _figure(figsize=(6.4, 4.4))
    for i, (fam, f) in enumerate(fits.items()):
        if f.holdout is None:
            continue
        h, c = f.holdout, COLORS[i % len(COLORS)]
        obs, pred = np.asarray(h.loss), np.asarray(h.predicted)
        yerr = None
        if h.predicted_interval is not None:
            iv = np.asarray(h.predicted_interval)
            yerr = np.abs(np.stack([pred - iv[:, 0], iv[:, 1] - pred]))
        ax.errorbar(obs, pred, yerr=yerr, fmt="o", ms=4, color=c, label=fam)
        lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, gid="reference", label="_nolegend_")
    ax.set(xlabel="observed loss (held out)", ylabel="predicted loss",
           title="Held-out largest-compute runs vs prediction")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no runs held out", ha="center", transform=ax.transAxes)
    return _save(fig, path)


__all__ = ["loss_vs_compute", "isoflop_curves", "law_vs_data", "holdout", "tidy_log_ticks",
           "tick_label", "visible_tick_labels", "EXTRAPOLATION", "NOT_BRACKETED"]
