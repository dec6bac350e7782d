"""Scaling sweeps: a spec (configs/sweeps/*.yaml) expands into members, one training run each.

Spec -> members (pure, deterministic; `expand`):
- every family in `families` (transformer, lstm) x every size x every token budget (`tokens`)
  or every IsoFLOP budget (`isoflop.budgets`) x every seed;
- a size is a shape (`n_layers`, `d_model`) or a target non-embedding parameter count
  (`params`). Transformer heads: n_heads = d_model // head_dim (at least 1; lowered until it
  divides d_model); the MLP width is the model's own rule (d_ff unset: 4·d_model for gelu).
  A target is solved over n_layers <= max_layers and d_model a multiple of width_multiple: among
  the shapes within `tolerance` of the target, the one whose d_model/n_layers is nearest
  `aspect_ratio`. Parameter counts are exact (jaxlm.flops.param_counts of jax.eval_shape).
- IsoFLOP: D = C / (6 N) (`flops_rule: 6N`, Chinchilla's convention) or D = C /
  flops.flops_per_token (`counter`: attention included); train.steps = round(D / (batch·seq_len));
  members with fewer than `min_steps` steps are left out.
- lr and batch size by size: value(N) = value · (N / ref_params)^exponent, clipped to [min, max]
  (value unset: the base config's optim.lr / train.batch_size).

Running (`run_sweep`): each member trains in DIR/runs/NAME through jaxlm.train.loop.train (the
code `train.py` runs) and one row is appended to DIR/runs.csv (COLUMNS). Appends hold an
exclusive POSIX lock (fcntl.lockf) on runs.csv, so workers on hosts that share the filesystem
(`--worker I --num-workers N`: member i belongs to worker i % N) append to one file; readers
take the last row per name. Members whose last row is ok (or failed, unless retry_failed) are
not redone; a preempted or interrupted member is re-run on its run directory, which resumes it
from its checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import functools
import io
import math
import os
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf import errors as oc_errors

from jaxlm import config as config_lib
from jaxlm import flops
from jaxlm.errors import JaxlmError

RUNS_CSV = "runs.csv"
RUNS_DIR = "runs"
COLUMNS = ("name", "family", "status", "params", "params_total", "tokens", "flops", "budget",
           "train_loss", "loss", "eval_bpb", "wall_time", "lr", "batch", "steps", "seed",
           "n_layers", "d_model", "seq_len", "error")
FAMILIES = ("transformer", "lstm")
FLOPS_RULES = ("6N", "counter")


# ----------------------------------------------------------------------------- spec schema

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
    tolerance: float = 0.1  # parameter targets: accepted relative error of N
    lr: Optional[RuleSpec] = None  # None: the sweep's lr rule
    batch_size: Optional[RuleSpec] = None  # None: the sweep's batch-size rule
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # run-config keys


@dataclasses.dataclass(frozen=True)
class IsoFlopSpec:
    budgets: list[float] = dataclasses.field(default_factory=list)  # compute budgets C (FLOPs)
    flops_rule: str = "6N"  # 6N: D = C/(6N); counter: D = C / flops.flops_per_token
    min_steps: int = 20  # members with fewer training steps are left out


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


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of the sweep. `error` is set when its config is invalid (recorded as failed)."""

    name: str
    family: str
    n_layers: int
    d_model: int
    params: int  # non-embedding (planned, exact)
    params_total: int
    tokens: int  # steps * batch * seq_len
    flops: float  # flops.flops_per_token * tokens
    budget: Optional[float]  # IsoFLOP budget C, None for the token grid
    steps: int
    batch: int
    lr: float
    seed: int
    seq_len: int
    overrides: tuple[str, ...]  # dotted key=value pairs over the base config
    error: Optional[str] = None


def _spec_error(e: oc_errors.OmegaConfBaseException, source: str) -> JaxlmError:
    key = getattr(e, "full_key", None)
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    if isinstance(e, oc_errors.ConfigKeyError):
        return JaxlmError(f"unknown sweep spec key '{key}' (in {source}): {msg}")
    return JaxlmError(f"bad value for sweep spec key '{key}' (in {source}): {msg}")


_NESTED = {("SweepSpec", "families"): ("dict", FamilySpec), ("SweepSpec", "isoflop"): IsoFlopSpec,
           ("SweepSpec", "lr"): RuleSpec, ("SweepSpec", "batch_size"): RuleSpec,
           ("FamilySpec", "sizes"): ("list", SizeSpec), ("FamilySpec", "lr"): RuleSpec,
           ("FamilySpec", "batch_size"): RuleSpec}


def _check_keys(data: Any, cls: type, prefix: str, source: str) -> None:
    """Unknown keys, named by their full path (OmegaConf loses it inside lists and dicts)."""
    if not isinstance(data, dict):
        return
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise JaxlmError(f"unknown sweep spec key '{where}' (in {source}); expected one of "
                             f"{', '.join(sorted(fields))}")
        nested = _NESTED.get((cls.__name__, key))
        if isinstance(nested, tuple) and nested[0] == "dict" and isinstance(value, dict):
            for k, v in value.items():
                _check_keys(v, nested[1], f"{where}.{k}.", source)
        elif isinstance(nested, tuple) and isinstance(value, list):
            for i, v in enumerate(value):
                _check_keys(v, nested[1], f"{where}[{i}].", source)
        elif nested is not None and not isinstance(nested, tuple):
            _check_keys(value, nested, f"{where}.", source)


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
    if any(d <= 0 for d in spec.tokens):
        raise bad("tokens", "must all be > 0")
    if not spec.seeds:
        raise bad("seeds", "is empty")
    if not 0 <= spec.warmup_fraction < 1:
        raise bad("warmup_fraction", f"must be in [0, 1); got {spec.warmup_fraction}")
    rules = [("lr", spec.lr), ("batch_size", spec.batch_size)]
    rules += [(f"families.{f}.{n}", getattr(fs, n)) for f, fs in spec.families.items()
              for n in ("lr", "batch_size")]
    for key, r in rules:
        if r is not None and ((r.value is not None and r.value <= 0) or r.ref_params <= 0):
            raise bad(key, "needs value > 0 and ref_params > 0")


# ----------------------------------------------------------------------------- expansion

def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _dotlist(d: dict) -> list[str]:
    out = []
    for k, v in _flatten(d).items():
        if isinstance(v, str):
            text = v
        else:
            text = yaml.safe_dump(v, default_flow_style=True).splitlines()[0]
        out.append(f"{k}={text}")
    return out


def _fmt(x: float) -> str:
    """1e12 -> '1e12', 3e+05 -> '3e5', 2.5e11 -> '2.5e11' (for names)."""
    mant, _, exp = f"{x:.3g}".partition("e")
    return f"{mant}e{int(exp)}" if exp else mant


def n_heads_for(d_model: int, head_dim: int) -> int:
    """The head-count rule: d_model // head_dim heads (at least 1), lowered until it divides."""
    n = max(1, d_model // head_dim)
    while d_model % n:
        n -= 1
    return n


@functools.lru_cache(maxsize=4096)
def _counts(model_items: tuple) -> tuple[int, int]:
    """(total, non-embedding) parameters of a model config, from jax.eval_shape (no FLOPs run)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxlm.models import build_model

    model = build_model(config_lib.ModelConfig(**dict(model_items)))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))
    return flops.param_counts(nn.meta.unbox(shapes["params"]))


def model_param_counts(m: config_lib.ModelConfig) -> tuple[int, int]:
    """(total, non-embedding) parameter counts of a model config (vocab_size must be set)."""
    items = tuple((k, tuple(v) if isinstance(v, list) else v)
                  for k, v in dataclasses.asdict(m).items())
    return _counts(items)


def _rule(r: RuleSpec, base: float, n: int) -> float:
    v = (r.value if r.value is not None else base) * (n / r.ref_params) ** r.exponent
    if r.min is not None:
        v = max(v, r.min)
    if r.max is not None:
        v = min(v, r.max)
    return v


def _vocab(cfg: config_lib.RunConfig) -> int:
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    if cfg.data.tokenizer == "byte":
        from jaxlm.data.tokenizers import ByteTokenizer

        return ByteTokenizer.vocab_size
    return cfg.data.sp_vocab_size  # SentencePiece: the size asked for (planning only)


class _Planner:
    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.base_overrides = _dotlist(spec.base_overrides)
        self.base = config_lib.load_config(spec.base_config, self.base_overrides)
        self._templates: dict[tuple, config_lib.ModelConfig] = {}

    def config(self, overrides: Sequence[str]) -> config_lib.RunConfig:
        return config_lib.load_config(self.spec.base_config, [*self.base_overrides, *overrides])

    def shape_overrides(self, fam: str, fs: FamilySpec, n_layers: int, d_model: int) -> list[str]:
        out = [f"model.family={fam}", f"model.n_layers={n_layers}", f"model.d_model={d_model}"]
        if fam == "transformer":
            out.append(f"model.n_heads={n_heads_for(d_model, fs.head_dim)}")
        return out

    def non_embed(self, fam: str, fs: FamilySpec, size: SizeSpec, n_layers: int,
                  d_model: int) -> int:
        """Exact non-embedding count; layers are identical, so N is linear in n_layers."""
        key = (fam, id(fs), id(size))
        if key not in self._templates:  # one config load per size; shapes vary by replace
            cfg = self.config([f"model.family={fam}", *_dotlist(fs.overrides),
                               *_dotlist(size.overrides), "train.steps=1000000"])
            self._templates[key] = dataclasses.replace(cfg.model, vocab_size=_vocab(cfg))

        def count(layers: int) -> int:
            m = dataclasses.replace(self._templates[key], n_layers=layers, d_model=d_model)
            if fam == "transformer":
                m = dataclasses.replace(m, n_heads=n_heads_for(d_model, fs.head_dim))
            return model_param_counts(m)[1]

        one, two = count(1), count(2)
        return one + (n_layers - 1) * (two - one)

    def solve(self, fam: str, fs: FamilySpec, size: SizeSpec) -> tuple[int, int]:
        """(n_layers, d_model) for a parameter target (see the module docstring)."""
        target = float(size.params)
        wm = fs.width_multiple
        layers = [size.n_layers] if size.n_layers else range(1, fs.max_layers + 1)
        cands = []
        for n_layers in layers:
            count = lambda k: self.non_embed(fam, fs, size, n_layers, k * wm)  # noqa: E731
            lo, hi = 1, 1
            while count(hi) < target and hi < 1 << 12:
                lo, hi = hi, hi * 2
            while hi - lo > 1:  # the largest k with count(k) < target is lo (or none)
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
            for k in {lo, hi}:
                err = abs(math.log(count(k) / target))
                cands.append((err, n_layers, k * wm))
        ok = [c for c in cands if c[0] <= math.log1p(fs.tolerance)]
        if ok:
            best = min(ok, key=lambda c: (abs(math.log(c[2] / c[1] / fs.aspect_ratio)), c[0]))
        else:
            best = min(cands)
        return best[1], best[2]


def expand(spec: SweepSpec) -> list[Member]:
    """All members of the sweep, in a fixed order (family, size, budget, seed)."""
    p = _Planner(spec)
    base = p.base
    seq_len = base.data.seq_len
    members: list[Member] = []
    for fam, fs in spec.families.items():
        lr_rule = fs.lr or spec.lr
        batch_rule = fs.batch_size or spec.batch_size
        for size in fs.sizes:
            if size.params is not None:
                n_layers, d_model = p.solve(fam, fs, size)
            else:
                n_layers, d_model = size.n_layers, size.d_model
            shape = p.shape_overrides(fam, fs, n_layers, d_model)
            extra = [*_dotlist(fs.overrides), *_dotlist(size.overrides)]
            error = None
            try:
                cfg0 = p.config([*shape, *extra, "train.steps=1000000"])
                total, n = model_param_counts(dataclasses.replace(cfg0.model,
                                                                  vocab_size=_vocab(cfg0)))
            except JaxlmError as e:
                error, cfg0, total, n = str(e), base, 0, 0
            seq = cfg0.data.seq_len
            batch = max(1, round(_rule(batch_rule, base.train.batch_size, max(n, 1))))
            lr = float(f"{_rule(lr_rule, base.optim.lr, max(n, 1)):.4g}")
            fpt = flops.flops_per_token(cfg0.model, n, seq)
            budgets: list[tuple[Optional[float], float]] = []  # (C or None, tokens D)
            if spec.isoflop is not None:
                for c in spec.isoflop.budgets:
                    per_token = 6.0 * n if spec.isoflop.flops_rule == "6N" else fpt
                    budgets.append((c, c / per_token if per_token else 0.0))
            else:
                budgets = [(None, d) for d in spec.tokens]
            base_name = f"{fam}-L{n_layers}-d{d_model}"
            for c, d in budgets:
                steps = max(1, round(d / (batch * seq)))
                if c is not None and error is None and steps < spec.isoflop.min_steps:
                    continue
                for seed in spec.seeds:
                    name = base_name + (f"-C{_fmt(c)}" if c is not None else f"-D{_fmt(d)}")
                    if len(spec.seeds) > 1 or seed != 0:
                        name += f"-s{seed}"
                    if size.tag:
                        name += f"-{size.tag}"
                    warmup = min(round(spec.warmup_fraction * steps), steps - 1)
                    ov = (*shape, f"train.steps={steps}", f"train.batch_size={batch}",
                          f"optim.lr={lr}", f"optim.warmup_steps={warmup}",
                          f"train.seed={seed}", *extra)
                    err = error
                    if err is None:
                        try:
                            p.config(ov)
                        except JaxlmError as e:
                            err = str(e)
                    tokens = steps * batch * seq
                    members.append(Member(
                        name=name, family=fam, n_layers=n_layers, d_model=d_model, params=n,
                        params_total=total, tokens=tokens, flops=fpt * tokens, budget=c,
                        steps=steps, batch=batch, lr=lr, seed=seed, seq_len=seq,
                        overrides=ov, error=err))
    seen: dict[str, int] = {}
    for m in members:
        if m.name in seen:
            raise JaxlmError(f"two sweep members are both named {m.name}: give one of the "
                             f"sizes a 'tag'")
        seen[m.name] = 1
    return members


def worker_members(members: Sequence[Member], worker: int, num_workers: int) -> list[Member]:
    """Member i belongs to worker i % num_workers."""
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise JaxlmError(f"--worker {worker} must be in [0, --num-workers {num_workers})")
    return [m for i, m in enumerate(members) if i % num_workers == worker]


def member_config(spec: SweepSpec, member: Member) -> config_lib.RunConfig:
    return config_lib.load_config(spec.base_config,
                                  [*_dotlist(spec.base_overrides), *member.overrides])


def plan_table(members: Sequence[Member]) -> str:
    """The dry-run table: one line per member."""
    head = (f"{'name':<34} {'N':>9} {'D':>9} {'C':>9} {'budget':>8} {'steps':>6} "
            f"{'batch':>5} {'lr':>8}")
    lines = [head]
    for m in members:
        budget = f"{m.budget:.2g}" if m.budget is not None else "-"
        line = (f"{m.name:<34} {m.params:>9,} {m.tokens:>9.3g} {m.flops:>9.3g} {budget:>8} "
                f"{m.steps:>6} {m.batch:>5} {m.lr:>8.3g}")
        if m.error:
            line += f"  INVALID: {m.error}"
        lines.append(line)
    total_c = sum(m.flops for m in members)
    total_d = sum(m.tokens for m in members)
    lines.append(f"{len(members)} members; {total_d:.3g} tokens, {total_c:.3g} FLOPs in all "
                 f"(N non-embedding; D tokens; C = jaxlm.flops count, attention included)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs.csv

def append_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Appends one row (header first if the file is new) under an exclusive fcntl lock."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    with open(path, "a", newline="", encoding="utf-8") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                w.writeheader()
            w.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def read_rows(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The last row per run name (rows cut short by a crash are ignored)."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        fcntl.lockf(f, fcntl.LOCK_SH)  # not while a writer is half-way through a row
        try:
            rows = list(csv.DictReader(f))
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)
    return {r["name"]: r for r in rows if r.get("name") and r.get("status") is not None}


# ----------------------------------------------------------------------------- running

@dataclasses.dataclass
class SweepOutcome:
    ran: list[str]
    skipped: list[str]  # already finished (or failed) in runs.csv
    failed: list[str]
    preempted: Optional[str] = None  # the member that was stopped, if any


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(e, JaxlmError) else f"{type(e).__name__}: {msg}"


def _final_train_loss(run_dir: pathlib.Path) -> Optional[float]:
    from jaxlm.train.metrics import load_metrics

    losses = [r["loss"] for r in load_metrics(run_dir) if "event" not in r and "loss" in r]
    return losses[-1] if losses else None


def _row(m: Member, status: str, **extra: Any) -> dict[str, Any]:
    row = {"name": m.name, "family": m.family, "status": status, "params": m.params,
           "params_total": m.params_total, "tokens": m.tokens, "flops": f"{m.flops:.6g}",
           "budget": f"{m.budget:.6g}" if m.budget is not None else None, "lr": m.lr,
           "batch": m.batch, "steps": m.steps, "seed": m.seed, "n_layers": m.n_layers,
           "d_model": m.d_model, "seq_len": m.seq_len}
    row.update(extra)
    return row


def run_sweep(spec: SweepSpec, members: Sequence[Member], workdir: str | os.PathLike, *,
              retry_failed: bool = False, quiet_runs: bool = True, show: bool = True,
              train_fn: Optional[Callable] = None) -> SweepOutcome:
    """Runs `members` (one worker's share) in workdir/runs/NAME; appends to workdir/runs.csv."""
    import jax

    from jaxlm.train import metrics as metrics_lib
    from jaxlm.train.preemption import StopSignals

    if train_fn is None:
        from jaxlm.train.loop import train as train_fn
    workdir = pathlib.Path(workdir)
    csv_path = workdir / RUNS_CSV
    done = read_rows(csv_path)
    finished = {"ok"} | ({"failed"} if not retry_failed else set())
    todo = [m for m in members if done.get(m.name, {}).get("status") not in finished]
    out = SweepOutcome([], [m.name for m in members if m not in todo], [])
    log = lambda msg: metrics_lib.log(msg, show)  # noqa: E731
    if out.skipped:
        log(f"jaxlm sweep: {len(out.skipped)} of {len(members)} members already in {csv_path}")
    bar = metrics_lib.progress(len(members), initial=len(out.skipped), desc="sweep",
                               enabled=show, unit="run")
    writes = lambda: jax.process_index() == 0  # noqa: E731 - multi-host: one writer
    try:
        with StopSignals(log=log) as stop:  # a signal between members: stop before the next
            for m in todo:
                if stop.requested:
                    out.preempted = m.name
                    break
                bar.set_postfix_str(m.name, refresh=True)
                if m.error:
                    out.failed.append(m.name)
                    log(f"jaxlm sweep: {m.name} failed: {m.error}")
                    if writes():
                        append_row(csv_path, _row(m, "failed", error=m.error))
                    bar.update(1)
                    continue
                run_dir = workdir / RUNS_DIR / m.name
                t0 = time.time()
                try:
                    result = train_fn(member_config(spec, m), run_dir, quiet=quiet_runs)
                except Exception as e:  # noqa: BLE001 - recorded; the sweep goes on
                    reason = _one_line(e)
                    out.failed.append(m.name)
                    log(f"jaxlm sweep: {m.name} failed: {reason}")
                    if writes():
                        append_row(csv_path, _row(m, "failed", error=reason,
                                                  wall_time=f"{time.time() - t0:.1f}"))
                    bar.update(1)
                    continue
                extra = {"wall_time": f"{result.wall_time:.1f}"}
                if result.params is not None:
                    total, n = flops.param_counts(result.params)
                    extra.update(params=n, params_total=total)
                if result.preempted:
                    out.preempted = m.name
                    if writes():
                        append_row(csv_path, _row(m, "preempted", **extra,
                                                  error=f"stopped at step {result.final_step}"))
                    break
                e = result.eval
                extra.update(train_loss=_fmt_loss(_final_train_loss(run_dir)),
                             loss=_fmt_loss(e.get("eval_loss")), eval_bpb=_fmt_loss(e.get("eval_bpb")))
                if writes():
                    append_row(csv_path, _row(m, "ok", **extra))
                out.ran.append(m.name)
                log(f"jaxlm sweep: {m.name}: eval loss {e.get('eval_loss', float('nan')):.4f} "
                    f"in {result.wall_time:.0f}s")
                bar.update(1)
    finally:
        bar.close()
    return out


def _fmt_loss(x: Optional[float]) -> Optional[str]:
    return None if x is None else f"{x:.6g}"


def write_spec_copy(spec: SweepSpec, workdir: str | os.PathLike) -> None:
    """DIR/sweep.yaml: the resolved spec, for the record (first writer wins)."""
    path = pathlib.Path(workdir) / "sweep.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(OmegaConf.structured(spec)))


__all__ = ["SweepSpec", "Member", "load_spec", "validate_spec", "expand", "worker_members",
           "member_config", "plan_table", "run_sweep", "read_rows", "append_row", "COLUMNS",
           "RUNS_CSV", "n_heads_for", "model_param_counts"]
