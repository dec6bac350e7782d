"""PNG plots of the scaling fits (matplotlib).

Each function takes `{family: FamilyFit}` (fit_all's results) and a path, and writes one
figure. Figures are made with matplotlib's object API, not pyplot: no display is needed, and
the backend of a notebook importing this module (its inline plots) is left alone."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from jaxlm.scaling.fit import Approach2Fit, FamilyFit, approach3_eval, power_law_eval

COLORS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _figure(*grid: int, figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def loss_vs_compute(fits: dict[str, FamilyFit], data: dict, path) -> None:
    """All runs' loss against training FLOPs, the compute frontier and its fitted power law."""
    fig, ax = _figure(figsize=(6.4, 4.4))
    for i, (fam, f) in enumerate(fits.items()):
        c, C, L = COLORS[i % len(COLORS)], data[fam]["C"], data[fam]["L"]
        ax.scatter(C, L, s=12, alpha=0.35, color=c, label=f"{fam} runs")
        law = f.power_laws.get("L(C)")
        if law is not None:
            idx = np.asarray(law.index)
            ax.scatter(C[idx], L[idx], s=28, color=c, edgecolor="k", zorder=3)
            xs = np.geomspace(C.min(), C.max() * 10, 100)
            ax.plot(xs, power_law_eval(law, xs), color=c,
                    label=f"{fam} frontier fit, alpha_C={law.alpha.value:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="loss",
           title="Loss vs compute, with the compute frontier")
    ax.legend(fontsize=7)
    _save(fig, path)


def isoflop_curves(fit2: Approach2Fit, path, family: str = "") -> None:
    """Loss vs N per IsoFLOP budget, the fitted parabolas and their minima."""
    fig, (ax, ax2) = _figure(1, 2, figsize=(10, 4.2))
    budgets = fit2.budgets
    cmap = matplotlib.colormaps["viridis"]
    for j, b in enumerate(budgets):
        c = cmap(j / max(len(budgets) - 1, 1))
        N, L = np.asarray(b.N), np.asarray(b.loss)
        ax.scatter(N, L, s=12, color=c)
        xs = np.geomspace(N.min(), N.max(), 60)
        ax.plot(xs, np.polyval(b.parabola_in_log_N, np.log(xs)), color=c, lw=1,
                label=f"C={b.C:.2g}")
        if b.N_opt:
            ax.scatter([b.N_opt], [b.loss_at_N_opt], marker="*", s=90, color=c,
                       edgecolor="k", zorder=3)
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="loss",
           title=f"IsoFLOP profiles {family}".strip())
    ax.legend(fontsize=6, ncol=2)
    Cs = np.asarray([b.C for b in budgets if b.N_opt])
    Ns = np.asarray([b.N_opt for b in budgets if b.N_opt])
    ax2.scatter(Cs, Ns, color="k", zorder=3, label="parabola minima")
    xs = np.geomspace(Cs.min(), Cs.max() * 10, 50)
    k, a = fit2.k.value, fit2.a.value
    ax2.plot(xs, k * xs ** a, label=f"N_opt = {k:.3g} C^{a:.3f}")
    ax2.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="N_opt",
            title="Approach 2: compute-optimal size")
    ax2.legend(fontsize=7)
    _save(fig, path)


def law_vs_data(fits: dict[str, FamilyFit], data: dict, path) -> None:
    """Approach 3 (predicted vs observed) and the Kaplan L(N), L(D) fits against the data."""
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
                xs = np.geomspace(x.min(), x.max(), 80)
                ax.plot(xs, power_law_eval(law, xs), color=c,
                        label=f"{fam}: alpha={law.alpha.value:.3f}")
    lo = min(d["L"].min() for d in data.values())
    hi = max(d["L"].max() for d in data.values())
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=1)
    axes[0].set(xlabel="observed loss", ylabel="Approach 3 prediction",
                title="L(N,D) = E + A/N^a + B/D^b")
    axes[1].set(xscale="log", yscale="log", xlabel="N", ylabel="loss",
                title="L(N): best loss per size")
    axes[2].set(xscale="log", yscale="log", xlabel="tokens D", ylabel="loss",
                title="L(D): best loss per token budget")
    for ax in axes:
        ax.legend(fontsize=7)
    _save(fig, path)


def holdout(fits: dict[str, FamilyFit], path) -> None:
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
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="observed loss (held out)", ylabel="predicted loss",
           title="Held-out largest-compute runs vs prediction")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no runs held out", ha="center", transform=ax.transAxes)
    _save(fig, path)


__all__ = ["loss_vs_compute", "isoflop_curves", "law_vs_data", "holdout"]
