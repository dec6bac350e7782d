"""Validation of the sweep spec's sections beyond the families and budgets (jaxlm.scaling.spec
calls these): tokens-per-parameter windows, the wsd and hp recipes, held-out members. Each
raises the one-line error `bad(key, why)` names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

from jaxlm import config as config_lib

if TYPE_CHECKING:
    from jaxlm.scaling.spec import SweepSpec


def validate_windows(spec: "SweepSpec", bad: Any) -> None:
    """isoflop.tokens_per_param and each families.F.tokens_per_param (isoflop sweeps only)."""
    keys = [(f"families.{f}.tokens_per_param", fs.tokens_per_param)
            for f, fs in spec.families.items()]
    if spec.isoflop is not None:
        keys.insert(0, ("isoflop.tokens_per_param", spec.isoflop.tokens_per_param))
    for key, window in keys:
        if window is None:
            continue
        if spec.isoflop is None:
            raise bad(key, "needs an isoflop sweep (a D/N window per compute budget)")
        if len(window) != 2 or not 0 < window[0] < window[1]:
            raise bad(key, f"must be [min, max] with 0 < min < max; got {list(window)}")


def family_window(spec: "SweepSpec", family: str) -> tuple[Optional[Sequence[float]], str]:
    """The D/N window that applies to `family` and the spec key it comes from."""
    own = spec.families[family].tokens_per_param if family in spec.families else None
    if own is not None:
        return own, f"families.{family}.tokens_per_param"
    return (spec.isoflop.tokens_per_param if spec.isoflop is not None else None,
            "isoflop.tokens_per_param")


def validate_holdout(spec: "SweepSpec", bad: Any) -> None:
    """holdout: IsoFLOP sweeps only, a family of the spec, a budget above the fitted ones."""
    for i, h in enumerate(spec.holdout):
        k = f"holdout[{i}]"
        if spec.isoflop is None or spec.wsd is not None:
            raise bad("holdout", "needs an isoflop sweep without wsd branches")
        if h.family not in spec.families:
            raise bad(f"{k}.family", f"is '{h.family}'; choose one of the spec's families: "
                      f"{', '.join(spec.families)}")
        top = max(spec.isoflop.budgets)
        if not h.budget > top:
            raise bad(f"{k}.budget", f"is {h.budget:g}; a held-out run must lie above the fitted "
                      f"budgets (largest isoflop.budgets: {top:g})")
        if (h.params is None) == (h.d_model is None and h.n_layers is None):
            raise bad(k, "needs n_layers and d_model, or params (not both)")
        if h.params is None and (h.n_layers is None or h.d_model is None):
            raise bad(k, "needs both n_layers and d_model")
        for name, v in (("n_layers", h.n_layers), ("d_model", h.d_model), ("params", h.params)):
            if v is not None and v <= 0:
                raise bad(f"{k}.{name}", f"must be > 0; got {v}")


def validate_recipes(spec: "SweepSpec", bad: Any) -> None:
    """The wsd and hp sections."""
    if spec.wsd is not None:
        if not 0 < spec.wsd.decay_fraction < 1:
            raise bad("wsd.decay_fraction", f"must be in (0, 1); got {spec.wsd.decay_fraction}")
        if spec.wsd.decay_shape not in config_lib.DECAY_SHAPES:
            raise bad("wsd.decay_shape", f"must be one of {', '.join(config_lib.DECAY_SHAPES)}"
                      f"; got '{spec.wsd.decay_shape}'")
    for name in ("lr_scale", "batch_scale", "b2", "warmup_fraction"):
        values = getattr(spec.hp, name)
        if len(set(values)) != len(values):
            raise bad(f"hp.{name}", f"repeats a value: {values}")
        low, high = (0.0, 1.0) if name in ("b2", "warmup_fraction") else (0.0, float("inf"))
        for v in values:
            if not (low < v < high or (name == "warmup_fraction" and v == 0)):
                raise bad(f"hp.{name}", f"holds {v}; must be in ({low:g}, {high:g})")


__all__ = ["family_window", "validate_holdout", "validate_recipes", "validate_windows"]
