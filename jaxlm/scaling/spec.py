"""Sweep specs (configs/sweeps/*.yaml): the schema, loading and validation.

A spec names model families (transformer, lstm) with their sizes (a shape, or a target
non-embedding parameter count), a grid of token budgets or IsoFLOP compute budgets, seeds, and
the lr and batch-size rules by size; jaxlm.scaling.plan expands it into members. Unknown keys
and bad values are one-line JaxlmErrors naming the key by its full path.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import typing
from typing import Any, Optional

import yaml

from omegaconf import OmegaConf
from omegaconf import errors as oc_errors

from jaxlm import config as config_lib
from jaxlm.errors import JaxlmError
from jaxlm.scaling import launch_spec, spec_checks
from jaxlm.scaling.launch_spec import LauncherSpec

FAMILIES = config_lib.FAMILIES  # the model families, defined once with the config
FLOPS_RULES = ("6N", "counter")


@dataclasses.dataclass(frozen=True)
class SizeSpec:
    n_layers: Optional[int] = None  # with d_model: a shape; alone with params: fixes the depth
    d_model: Optional[int] = None
    params: Optional[float] = None  # target non-embedding parameter count (shape solved)
    tag: Optional[str] = None  # appended to the member names ("-TAG")
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # run-config keys


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """value(N) = value * (N / ref_params) ** exponent, clipped to [min, max]."""

    value: Optional[float] = None  # None: the base config's value
    ref_params: float = 1.0e6
    exponent: float = 0.0
    min: Optional[float] = None
    max: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    sizes: list[SizeSpec] = dataclasses.field(default_factory=list)
    head_dim: int = 64  # transformer: n_heads = d_model // head_dim
    width_multiple: int = 32  # parameter targets: d_model is a multiple of this
    aspect_ratio: float = 32.0  # parameter targets: preferred d_model / n_layers
    max_layers: int = 12  # parameter targets: deepest shape considered
    # parameter targets: every size of the family has this many layers (only d_model varies)
    depth: Optional[int] = None
    # parameter targets: d_model = aspect_ratio * n_layers exactly (rounded to width_multiple)
    fixed_aspect: bool = False
    tolerance: float = 0.1  # parameter targets: accepted relative error of N
    lr: Optional[RuleSpec] = None  # None: the sweep's lr rule
    batch_size: Optional[RuleSpec] = None  # None: the sweep's batch-size rule
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # run-config keys
    # isoflop sweeps: this family's [min, max] D/N window (None: isoflop.tokens_per_param)
    tokens_per_param: Optional[list[float]] = None


@dataclasses.dataclass(frozen=True)
class IsoFlopSpec:
    budgets: list[float] = dataclasses.field(default_factory=list)  # compute budgets C (FLOPs)
    flops_rule: str = "counter"  # counter: D = C / flops.flops_per_token (attention); 6N: C/(6N)
    min_steps: int = 20  # members with fewer training steps are left out
    # [min, max] tokens per non-embedding parameter (D/N): sizes outside are left out per budget
    tokens_per_param: Optional[list[float]] = None
    # lower a member's batch (below its batch rule) until it has min_steps steps; recorded
    batch_for_min_steps: bool = False


@dataclasses.dataclass(frozen=True)
class WsdSpec:
    """Cooldown branches: per size (and hyperparameter setting and seed) one constant-lr trunk
    and, per token budget, a branch that starts from the trunk's checkpoint at the budget's
    decay start and decays over the budget's last decay_fraction of steps."""

    decay_fraction: float = 0.2  # of each branch's steps (optim.decay_fraction)
    decay_shape: str = "linear"  # optim.decay_shape: linear | cosine | 1-sqrt


@dataclasses.dataclass(frozen=True)
class HpSpec:
    """Hyperparameter grid axes, crossed with every size and budget (an empty list: the rule's
    value only). The fitter keeps the best run per (N, D)."""

    lr_scale: list[float] = dataclasses.field(default_factory=list)  # x the size's lr rule
    batch_scale: list[float] = dataclasses.field(default_factory=list)  # x its batch rule
    b2: list[float] = dataclasses.field(default_factory=list)  # optim.b2 values
    warmup_fraction: list[float] = dataclasses.field(default_factory=list)  # of the steps


@dataclasses.dataclass(frozen=True)
class HoldoutSpec:
    """A held-out member (spec key holdout): trained after every other member at an IsoFLOP
    budget above the fitted ones, tagged role=holdout in runs.csv, left out of every fit and
    predicted by Approach 3 (jaxlm.scaling.holdout_runs)."""

    family: str = ""
    budget: float = 0.0  # compute budget C (FLOPs), above every isoflop.budgets entry
    n_layers: Optional[int] = None  # a shape (with d_model), or a params target
    d_model: Optional[int] = None
    params: Optional[float] = None  # target non-embedding parameter count (family's shape rule)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    base_config: Optional[str] = None  # a run config (relative to the spec's folder); None: defaults
    base_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    families: dict[str, FamilySpec] = dataclasses.field(default_factory=dict)
    tokens: list[float] = dataclasses.field(default_factory=list)  # token-budget grid
    isoflop: Optional[IsoFlopSpec] = None  # or IsoFLOP budgets
    lr: RuleSpec = dataclasses.field(default_factory=RuleSpec)
    batch_size: RuleSpec = dataclasses.field(default_factory=RuleSpec)
    warmup_fraction: float = 0.05  # optim.warmup_steps = round(fraction * steps)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])  # train.seed (init)
    wsd: Optional[WsdSpec] = None  # cooldown branches instead of one run per budget
    hp: HpSpec = dataclasses.field(default_factory=HpSpec)  # hyperparameter axes
    launcher: LauncherSpec = dataclasses.field(default_factory=LauncherSpec)  # launch_spec
    holdout: list[HoldoutSpec] = dataclasses.field(default_factory=list)  # trained last, not fitted


def _spec_error(e: oc_errors.OmegaConfBaseException, source: str) -> JaxlmError:
    key = getattr(e, "full_key", None)
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    if isinstance(e, oc_errors.ConfigKeyError):
        return JaxlmError(f"unknown sweep spec key '{key}' (in {source}): {msg}")
    return JaxlmError(f"bad value for sweep spec key '{key}' (in {source}): {msg}")


_NESTED = {("SweepSpec", "families"): ("dict", FamilySpec), ("SweepSpec", "isoflop"): IsoFlopSpec,
           ("SweepSpec", "lr"): RuleSpec, ("SweepSpec", "wsd"): WsdSpec,
           ("SweepSpec", "hp"): HpSpec, ("SweepSpec", "holdout"): ("list", HoldoutSpec), ("SweepSpec", "batch_size"): RuleSpec,
           ("FamilySpec", "sizes"): ("list", SizeSpec), ("FamilySpec", "lr"): RuleSpec,
           ("FamilySpec", "batch_size"): RuleSpec, ("SweepSpec", "launcher"): LauncherSpec,
           **launch_spec.NESTED}


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping"}.get(type(value), f"the value {value!r}")


def _check_container(value: Any, hint: Any, where: str, source: str) -> None:
    """A mapping or list key given the other kind (or a scalar): OmegaConf raises a TypeError."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:  # Optional[X]: None is fine, else X
        if value is None:
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    want = dict if (origin is dict or dataclasses.is_dataclass(hint)) else origin
    if want in (dict, list) and not isinstance(value, want):
        example = " (run-config keys: train.steps: 100)" if hint == dict[str, Any] else ""
        raise JaxlmError(f"bad value for sweep spec key '{where}' (in {source}): expected "
                         f"{_kind(want())}{example}, not {_kind(value)}")


def _check_keys(data: Any, cls: type, prefix: str, source: str) -> None:
    """Unknown keys and containers of the wrong kind, named by their full path (OmegaConf
    loses it inside lists and dicts)."""
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in hints:
            raise JaxlmError(f"unknown sweep spec key '{where}' (in {source}); expected one of "
                             f"{', '.join(sorted(hints))}")
        _check_container(value, hints[key], where, source)
        nested = _NESTED.get((cls.__name__, key))
        if isinstance(nested, tuple) and nested[0] == "dict" and isinstance(value, dict):
            for k, v in value.items():
                _check_container(v, nested[1], f"{where}.{k}", source)
                _check_keys(v, nested[1], f"{where}.{k}.", source)
        elif isinstance(nested, tuple) and isinstance(value, list):
            for i, v in enumerate(value):
                _check_container(v, nested[1], f"{where}[{i}]", source)
                _check_keys(v, nested[1], f"{where}[{i}].", source)
        elif nested is not None and not isinstance(nested, tuple):
            _check_keys(value, nested, f"{where}.", source)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dotlist(d: dict) -> list[str]:
    """A spec's run-config overrides (nested or dotted keys) as `key=value` overrides."""
    out = []
    for k, v in _flatten(d).items():
        if isinstance(v, str):
            text = v
        else:
            text = yaml.safe_dump(v, default_flow_style=True).splitlines()[0]
        out.append(f"{k}={text}")
    return out


def _check_overrides(spec: SweepSpec, source: str) -> None:
    """Each group of run-config overrides, alone against the run-config schema (unknown keys,
    wrong types): an error names the spec file and the spec key it comes from."""
    groups = [("base_overrides", spec.base_overrides)]
    for fam, fs in spec.families.items():
        groups.append((f"families.{fam}.overrides", fs.overrides))
        groups += [(f"families.{fam}.sizes[{i}].overrides", s.overrides)
                   for i, s in enumerate(fs.sizes)]
    for key, overrides in groups:
        if overrides:
            config_lib.check_overrides(dotlist(overrides), f"sweep spec {source}, key '{key}'")
        data = [k for k in _flatten(overrides) if k.startswith("data.")]
        if data and key != "base_overrides":  # families are compared on the same data
            raise JaxlmError(f"sweep spec key '{key}.{data[0]}': every member trains on the same "
                             f"data, tokenizer and seq_len; set data keys in base_overrides (in {source})")


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Parses and validates a sweep spec; a relative base_config is resolved against its folder."""
    path = pathlib.Path(path)
    data = config_lib._read_yaml(str(path))
    _check_keys(data, SweepSpec, "", str(path))
    try:
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepSpec),
                                                   OmegaConf.create(data)))
    except oc_errors.OmegaConfBaseException as e:
        raise _spec_error(e, str(path)) from None
    _check_overrides(spec, str(path))
    if spec.base_config and not pathlib.Path(spec.base_config).expanduser().is_absolute():
        spec = dataclasses.replace(spec, base_config=str(path.parent / spec.base_config))
    validate_spec(spec, str(path))
    return spec


def validate_spec(spec: SweepSpec, source: str = "sweep spec") -> None:
    def bad(key: str, why: str) -> JaxlmError:
        return JaxlmError(f"sweep spec key '{key}' {why} (in {source})")

    if not spec.families:
        raise bad("families", "is empty: name transformer and/or lstm with their sizes")
    for fam, fs in spec.families.items():
        if fam not in FAMILIES:
            raise bad(f"families.{fam}", f"is not a model family; choose from {', '.join(FAMILIES)}")
        if not fs.sizes:
            raise bad(f"families.{fam}.sizes", "is empty")
        for i, s in enumerate(fs.sizes):
            k = f"families.{fam}.sizes[{i}]"
            shape = s.n_layers is not None and s.d_model is not None
            if s.params is not None and s.d_model is not None:
                raise bad(k, "gives both params and d_model: give a shape or a target")
            if not shape and s.params is None:
                raise bad(k, "needs n_layers and d_model, or params")
            for name in ("n_layers", "d_model", "params"):
                v = getattr(s, name)
                if v is not None and v <= 0:
                    raise bad(f"{k}.{name}", f"must be > 0; got {v}")
        for name in ("head_dim", "width_multiple", "max_layers", "aspect_ratio", "tolerance"):
            if getattr(fs, name) <= 0:
                raise bad(f"families.{fam}.{name}", f"must be > 0; got {getattr(fs, name)}")
        _validate_shape_family(fam, fs, bad)
    if bool(spec.tokens) == (spec.isoflop is not None):
        raise bad("tokens", "or 'isoflop' must be given, exactly one of them")
    if spec.isoflop is not None:
        if not spec.isoflop.budgets:
            raise bad("isoflop.budgets", "is empty")
        if spec.isoflop.flops_rule not in FLOPS_RULES:
            raise bad("isoflop.flops_rule", f"must be one of {', '.join(FLOPS_RULES)}; "
                      f"got '{spec.isoflop.flops_rule}'")
        if any(c <= 0 for c in spec.isoflop.budgets):
            raise bad("isoflop.budgets", "must all be > 0")
        if spec.isoflop.min_steps < 1:
            raise bad("isoflop.min_steps", f"must be >= 1; got {spec.isoflop.min_steps}")
    launch_spec.validate_launcher(spec.launcher, bad)
    if any(d <= 0 for d in spec.tokens):
        raise bad("tokens", "must all be > 0")
    if not spec.seeds:
        raise bad("seeds", "is empty")
    if not 0 <= spec.warmup_fraction < 1:
        raise bad("warmup_fraction", f"must be in [0, 1); got {spec.warmup_fraction}")
    spec_checks.validate_windows(spec, bad)
    spec_checks.validate_recipes(spec, bad)
    spec_checks.validate_holdout(spec, bad)
    rules = [("lr", spec.lr), ("batch_size", spec.batch_size)]
    rules += [(f"families.{f}.{n}", getattr(fs, n)) for f, fs in spec.families.items()
              for n in ("lr", "batch_size")]
    for key, r in rules:
        if r is not None and ((r.value is not None and r.value <= 0) or r.ref_params <= 0):
            raise bad(key, "needs value > 0 and ref_params > 0")


def _validate_shape_family(fam: str, fs: FamilySpec, bad: Any) -> None:
    """depth and fixed_aspect: one shape rule per family, consistent with its sizes."""
    key = f"families.{fam}"
    if fs.depth is not None and fs.fixed_aspect:
        raise bad(f"{key}.depth", "and fixed_aspect are both given: choose one shape rule")
    if fs.depth is not None:
        if fs.depth <= 0:
            raise bad(f"{key}.depth", f"must be > 0; got {fs.depth}")
        for i, s in enumerate(fs.sizes):
            if s.n_layers is not None and s.n_layers != fs.depth:
                raise bad(f"{key}.sizes[{i}].n_layers", f"is {s.n_layers} but the family's "
                          f"depth is {fs.depth}")
    if fs.fixed_aspect:
        for i, s in enumerate(fs.sizes):
            if s.params is not None and s.n_layers is not None:
                raise bad(f"{key}.sizes[{i}].n_layers", "is given with fixed_aspect: the "
                          "aspect ratio sets the depth of a parameter target")


@dataclasses.dataclass(frozen=True)
class HpPoint:
    """One point of the hyperparameter grid (spec key hp) and its member-name suffix."""
    lr_scale: float = 1.0
    batch_scale: float = 1.0
    b2: Optional[float] = None
    warmup_fraction: float = 0.05
    suffix: str = ""


def hp_grid(spec: SweepSpec) -> list[HpPoint]:
    """Every combination of the hp axes; an axis with more than one value names itself."""
    h = spec.hp
    axes = [("lr_scale", h.lr_scale or [1.0], "lr{:g}x"),
            ("batch_scale", h.batch_scale or [1.0], "bs{:g}x"),
            ("b2", h.b2 or [None], "b2-{:g}"),
            ("warmup_fraction", h.warmup_fraction or [spec.warmup_fraction], "wu{:g}")]
    out = []
    for values in itertools.product(*(vals for _, vals, _ in axes)):
        suffix = "".join(f"-{fmt.format(v)}" for (_, vals, fmt), v in zip(axes, values)
                         if len(vals) > 1)
        out.append(HpPoint(**{name: v for (name, _, _), v in zip(axes, values)}, suffix=suffix))
    return out


def write_spec_copy(spec: SweepSpec, workdir: str | os.PathLike) -> None:
    """DIR/sweep.yaml: the resolved spec, for the record (first writer wins)."""
    path = pathlib.Path(workdir) / "sweep.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(OmegaConf.structured(spec)))


__all__ = ["HoldoutSpec", "SizeSpec", "RuleSpec", "WsdSpec", "HpSpec", "HpPoint", "hp_grid", "FamilySpec", "IsoFlopSpec", "SweepSpec", "FAMILIES",
           "FLOPS_RULES", "dotlist", "load_spec", "validate_spec", "write_spec_copy"]
