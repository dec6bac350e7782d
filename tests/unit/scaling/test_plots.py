"""jaxlm.scaling.plots: what the figures claim is what the runs support, and they are legible.

The figures are inspected as matplotlib objects (each plot function returns its Figure, drawn
on an Agg canvas): budget colours, the x-range of every fitted curve, the style of
extrapolations, the markers of IsoFLOP minima, and the drawn extents of the tick labels. Two
sources: the shipped CPU demo sweep (narrow ranges; its budget labels sort as strings, not by
compute; one transformer budget's parabola has its minimum below the sampled sizes) and a
synthetic IsoFLOP grid over three decades of compute."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from helpers import REPO_ROOT
from scaling_helpers import isoflop_grid, random_constants

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # tight_layout on tiny axes


def _demo_fits():
    from jaxlm.scaling import report

    data = report.read_runs(REPO_ROOT / "tests" / "data" / "old_cpu_demo_runs.csv")
    return report.fit_runs(data, n_boot=0), data


def _synthetic_fits():
    from jaxlm.scaling.fit import fit_all

    rng = np.random.default_rng(3)
    N, D, C, L = isoflop_grid(rng, random_constants(rng), 0.01,
                              budgets=np.geomspace(1e15, 1e18, 4), per_budget=7)
    data = {"synthetic": {"N": N, "D": D, "C": C, "L": L, "budget": None}}
    return {"synthetic": fit_all(N, D, C, L, n_boot=0)}, data


@pytest.fixture(scope="module", params=["cpu_demo", "synthetic"])
def figures(request, tmp_path_factory) -> dict[str, Figure]:
    from jaxlm.scaling import plots
    from jaxlm.scaling.diagnostics import diagnose, plot_notes

    fits, data = _demo_fits() if request.param == "cpu_demo" else _synthetic_fits()
    out = tmp_path_factory.mktemp(request.param)
    figs = {"loss_vs_compute": plots.loss_vs_compute(fits, data, out / "a.png"),
            "law_vs_data": plots.law_vs_data(fits, data, out / "b.png"),
            "holdout": plots.holdout(fits, out / "c.png")}
    for fam, f in fits.items():
        figs[f"isoflop {fam}"] = plots.isoflop_curves(f.approach2, out / f"{fam}.png", fam,
                                                      plot_notes(diagnose(fits), fam, "approach2"))
        figs[f"isoflop {fam}"].fit2 = f.approach2
    for name, fig in figs.items():
        assert isinstance(fig, Figure), f"{name}: the plot function returns its Figure"
        fig.source, fig.diags = request.param, diagnose(fits)
        assert (out / "a.png").is_file()
    return figs


def _isoflops(figures):
    return [(name, fig) for name, fig in figures.items() if name.startswith("isoflop")]


def test_budget_colours_are_ordered_by_compute_with_a_colorbar(figures):
    viridis = colormaps["viridis"](np.linspace(0, 1, 256))
    for name, fig in _isoflops(figures):
        ax = fig.axes[0]
        curves = [ln for ln in ax.lines if ln.get_gid() == "budget"]
        assert len(curves) == len(fig.fit2.budgets) >= 2
        C = [float(ln.get_label().removeprefix("C=")) for ln in curves]
        # each curve's place along the colormap (nearest of 256 samples)
        place = [int(np.argmin(np.abs(viridis - to_rgba(ln.get_color())).sum(1)))
                 for ln in curves]
        by_budget = [p for _, p in sorted(zip(C, place))]
        assert by_budget == sorted(by_budget) and len(set(by_budget)) == len(by_budget), \
            f"{name}: colours along the colormap {by_budget} are not in the order of C"
        bars = [a for a in fig.axes if "compute budget" in a.get_ylabel()]
        assert len(bars) == 1, f"{name}: no colorbar for the budgets"


def _data_x(ax) -> np.ndarray:
    pts = [c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())]
    return np.concatenate(pts) if pts else np.array([])


def test_fitted_curves_stay_in_their_data_and_extrapolation_is_dashed(figures):
    extrapolated = 0
    for name, fig in figures.items():
        for ax in fig.axes:
            x = _data_x(ax)
            for ln in ax.lines:
                xs = np.asarray(ln.get_xdata(), dtype=float)
                if ln.get_gid() == "reference" or ln.get_linestyle() == "None" or not len(xs):
                    continue  # y = x guides, errorbar markers
                if ln.get_gid() == "extrapolation":
                    extrapolated += 1
                    assert ln.get_linestyle() == "--", f"{name}: extrapolation not dashed"
                    solid = [f for f in ax.lines if f.get_gid() == "fit"
                             and f.get_color() == ln.get_color()]
                    assert len(solid) == 1 and np.isclose(xs.min(), solid[0].get_xdata().max())
                    assert xs.max() > x.max(), f"{name}: a dashed part inside the data"
                    assert "extrapolation" in [t.get_text() for t in ax.get_legend().texts]
                    continue
                assert ln.get_linestyle() == "-", f"{name}: {ln.get_label()} is not solid"
                assert x.min() * (1 - 1e-9) <= xs.min() and xs.max() <= x.max() * (1 + 1e-9), \
                    f"{name}: {ln.get_label()} drawn over x {xs.min():.3g}..{xs.max():.3g}, " \
                    f"outside the data {x.min():.3g}..{x.max():.3g}"
    assert extrapolated >= 2  # the compute frontier and N_opt(C) continue past the runs


def test_each_budget_curve_covers_only_its_own_sizes_and_minima_are_bracketed(figures):
    for name, fig in _isoflops(figures):
        ax = fig.axes[0]
        budgets = {f"C={b.C:.3g}": b for b in fig.fit2.budgets}
        for ln in (ln for ln in ax.lines if ln.get_gid() == "budget"):
            b = budgets[ln.get_label()]
            xs = ln.get_xdata()
            assert np.isclose(xs.min(), min(b.N)) and np.isclose(xs.max(), max(b.N))
        minima = [c for c in ax.collections if c.get_gid() == "minimum"]
        hollow = [c for c in ax.collections if c.get_gid() == "not bracketed"]
        outside = [b for b in fig.fit2.budgets if not b.bracketed]
        assert len(hollow) == len(outside) and len(minima) == fig.fit2.n_bracketed
        for c in minima:  # a minimum drawn as a result lies inside its budget's sizes
            (x, _), = c.get_offsets()
            assert any(b.bracketed and min(b.N) < x < max(b.N) and np.isclose(x, b.N_opt)
                       for b in fig.fit2.budgets)
        for c in hollow:  # at the edge of the sampled sizes (or its lowest loss), hollow
            (x, _), = c.get_offsets()
            assert any(np.isclose(x, min(b.N)) or np.isclose(x, max(b.N))
                       or np.isclose(x, b.best_N) for b in outside)
            assert c.get_facecolor().size == 0 or c.get_facecolor()[0][3] == 0
        if outside:
            assert any("not bracketed" in t.get_text() for t in ax.get_legend().texts)
    demo = [fig for name, fig in _isoflops(figures) if name == "isoflop transformer"]
    for fig in demo:  # the shipped sweep has such a budget: the test sees the case
        assert any(c.get_gid() == "not bracketed" for c in fig.axes[0].collections)


def _tick_labels(axis) -> list:
    from jaxlm.scaling.plots import visible_tick_labels

    return visible_tick_labels(axis)


def test_no_two_tick_labels_overlap(figures):
    for name, fig in figures.items():
        fig.canvas.draw()  # Agg
        renderer = fig.canvas.get_renderer()
        for i, ax in enumerate(fig.axes):
            for axis in (ax.xaxis, ax.yaxis):
                labels = _tick_labels(axis)
                boxes = [t.get_window_extent(renderer) for t in labels]
                for j, a in enumerate(boxes):
                    for k in range(j + 1, len(boxes)):
                        assert not a.overlaps(boxes[k]), (
                            f"{name}, axes {i} {axis.axis_name}: tick labels "
                            f"{labels[j].get_text()!r} and {labels[k].get_text()!r} overlap")
                if axis.get_scale() == "log" and ax.get_label() != "<colorbar>":
                    assert len(labels) >= 2, f"{name}, axes {i}: fewer than two tick labels"


@pytest.mark.parametrize("v, text", [(3.0, "3"), (1.5, "1.5"), (1e5, "$10^{5}$"),
                                     (2e12, "$2\\times10^{12}$"), (2500.0, "2500")])
def test_tick_label(v, text):
    from jaxlm.scaling.plots import tick_label

    assert tick_label(v) == text


def _notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_gid() == "diagnostics"]


def test_diagnostics_are_written_on_the_axes_of_what_they_flag(figures):
    """The old demo's warnings (Approach 3's E at its bound, L(N) rising with N, Approach 2 not
    fitted) are written on the axes that show those quantities; no warning, no note."""
    from jaxlm.scaling.diagnostics import warnings

    for name, fig in figures.items():
        notes = [n for ax in fig.axes for n in _notes(ax)]
        if not warnings(fig.diags):
            assert not notes, f"{name}: notes without a warning: {notes}"
        elif name == "law_vs_data":
            (a3,), (ln,) = _notes(fig.axes[0]), _notes(fig.axes[1])
            assert "transformer: approach3.E: at its bound" in a3 and "lstm: approach3.E" in a3
            assert "transformer: L(N).alpha: negative exponent" in ln
        elif name.startswith("isoflop"):
            ax2 = fig.axes[1]
            (text,) = _notes(ax2)
            assert "budget(s) not bracketed" in text and "approach2: not fitted" in text
            assert [t for t in ax2.texts if t.get_gid() == "not fitted"]
            assert not [ln for ln in ax2.lines if ln.get_gid() in ("fit", "extrapolation")]
    if fig.source == "cpu_demo":
        assert warnings(fig.diags), "the old demo sweep has warnings: the test sees them"
