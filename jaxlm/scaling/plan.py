"""Sweep planning: a spec expands into members, one training run each (pure, deterministic).

- every family in `families` (transformer, lstm) x every size x every token budget (`tokens`)
  or every IsoFLOP budget (`isoflop.budgets`) x every seed;
- a size is a shape (`n_layers`, `d_model`) or a target non-embedding parameter count
  (`params`), solved by jaxlm.scaling.grid (also: the tokens-per-parameter window, the batch
  per budget). Transformer heads: n_heads = d_model // head_dim (at least 1; lowered until it
  divides d_model). Parameter counts are exact (jaxlm.flops.param_counts of jax.eval_shape).
- IsoFLOP: D = C / flops.flops_per_token (`flops_rule: counter`, the default: attention
  included) or C / (6 N) (`6N`, Chinchilla's); train.steps = round(D / (batch·seq_len)).
- lr and batch size by size: value(N) = value · (N / ref_params)^exponent, clipped to [min, max]
  (value unset: the base config's optim.lr / train.batch_size).

Nothing here writes: run configs are loaded (the base config file) and shapes evaluated
abstractly (jax.eval_shape), and a member's config is its base config plus overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Optional, Sequence

from jaxlm import config as config_lib
from jaxlm import flops
from jaxlm.errors import JaxlmError
from jaxlm.scaling import grid, spec_checks
from jaxlm.scaling.grid import Excluded
from jaxlm.scaling.results import RUNS_DIR  # a member trains in WORKDIR/runs/NAME
from jaxlm.scaling.spec import FamilySpec, HpPoint, SizeSpec, SweepSpec, dotlist, hp_grid


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
    # a member that must have finished ok before this one starts (a cooldown branch starts
    # from its trunk's checkpoint); every launcher honours it
    after: Optional[str] = None
    role: str = ""  # "trunk" | "branch" (spec key wsd) | "holdout" (spec key holdout) | ""
    branch_step: Optional[int] = None  # branch: the trunk checkpoint (step) it starts from
    b2: Optional[float] = None  # optim.b2 from the hp axes (None: the base config's)
    warmup: Optional[int] = None  # optim.warmup_steps
    # the size's batch rule, when isoflop.batch_for_min_steps lowered `batch` below it
    batch_rule: Optional[int] = None


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
        self.base_overrides = dotlist(spec.base_overrides)
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
            cfg = self.config([f"model.family={fam}", *dotlist(fs.overrides),
                               *dotlist(size.overrides), "train.steps=1000000"])
            self._templates[key] = dataclasses.replace(cfg.model, vocab_size=_vocab(cfg))

        def count(layers: int) -> int:
            m = dataclasses.replace(self._templates[key], n_layers=layers, d_model=d_model)
            if fam == "transformer":
                m = dataclasses.replace(m, n_heads=n_heads_for(d_model, fs.head_dim))
            return model_param_counts(m)[1]

        one, two = count(1), count(2)
        return one + (n_layers - 1) * (two - one)

    def solve(self, fam: str, fs: FamilySpec, size: SizeSpec) -> tuple[int, int]:
        """(n_layers, d_model) for a parameter target (jaxlm.scaling.grid.solve_shape)."""
        return grid.solve_shape(lambda nl, d: self.non_embed(fam, fs, size, nl, d),
                                float(size.params), fs.width_multiple, fs.aspect_ratio,
                                fs.max_layers, fs.tolerance, size.n_layers or fs.depth,
                                fs.fixed_aspect)


@dataclasses.dataclass(frozen=True)
class _Size:
    """What every member of one size shares."""
    fam: str
    n_layers: int
    d_model: int
    params: int
    params_total: int
    seq_len: int
    fpt: float
    shape: tuple[str, ...]
    extra: tuple[str, ...]
    error: Optional[str]
    base_name: str
    tag: Optional[str]
    budgets: tuple[tuple[Optional[float], float], ...]  # (C or None, tokens D)


def _name(s: _Size, label: str, hp: HpPoint, seed: int, spec: SweepSpec) -> str:
    name = f"{s.base_name}-{label}{hp.suffix}"
    if len(spec.seeds) > 1 or seed != 0:
        name += f"-s{seed}"
    return name + (f"-{s.tag}" if s.tag else "")


def _member(p: "_Planner", s: _Size, name: str, c: Optional[float], steps: int, batch: int,
            lr: float, seed: int, warmup: int, hp: HpPoint, more: Sequence[str] = (),
            **fields: Any) -> Member:
    """A member and its overrides, validated as a run config (an invalid one: `error`)."""
    ov = (*s.shape, f"train.steps={steps}", f"train.batch_size={batch}", f"optim.lr={lr}",
          f"optim.warmup_steps={warmup}", f"train.seed={seed}",
          *([f"optim.b2={hp.b2}"] if hp.b2 is not None else []),
          *grid.same_eval_tokens(p.base.train, fields.get("batch_rule"), batch), *more, *s.extra)
    err = s.error
    if err is None:
        check = ([f"train.branch_from={RUNS_DIR}/{fields['after']}@{fields['branch_step']}"]
                 if fields.get("role") == "branch" else [])
        try:
            p.config([*ov, *check])
        except JaxlmError as e:
            err = str(e)
    tokens = steps * batch * s.seq_len
    return Member(name=name, family=s.fam, n_layers=s.n_layers, d_model=s.d_model,
                  params=s.params, params_total=s.params_total, tokens=tokens,
                  flops=s.fpt * tokens, budget=c, steps=steps, batch=batch, lr=lr, seed=seed,
                  seq_len=s.seq_len, overrides=ov, error=err, b2=hp.b2, warmup=warmup,
                  **fields)


def _branches(p: "_Planner", spec: SweepSpec, s: _Size, hp: HpPoint, batch: int, lr: float,
              seed: int, excluded: list[Excluded]) -> list[Member]:
    """One constant-lr trunk and a cooldown branch per budget (spec key wsd): the branch of T
    steps starts from the trunk's checkpoint at its decay start T - round(f T). The trunk runs
    to the latest decay start and keeps a checkpoint at every one (train.checkpoint_at).
    With isoflop.batch_for_min_steps the batch is the one the smallest kept budget needs."""
    w, iso = spec.wsd, spec.isoflop
    budgets, rule = s.budgets, batch
    record = excluded if seed == spec.seeds[0] else []  # once for every seed
    if iso is not None and s.error is None:
        budgets = [(c, d) for c, d in s.budgets
                   if not _left_out(s, spec, hp, c, d, None, record)]
        if iso.batch_for_min_steps and budgets:
            batch = grid.batch_for_steps(min(d for _, d in budgets), batch, s.seq_len,
                                         iso.min_steps)
    plan = []  # (C, D, steps T, decay start S)
    for c, d in budgets:
        steps = grid.steps_for(d, batch, s.seq_len)
        if c is not None and s.error is None and _left_out(s, spec, hp, c, d, steps, record):
            continue
        plan.append((c, d, steps, steps - round(w.decay_fraction * steps)))
    if not plan:
        return []
    extra = {"batch_rule": rule} if batch != rule else {}
    starts = [max(S, 1) for *_, S in plan]
    warmup = min(round(hp.warmup_fraction * min(T for _, _, T, _ in plan)), min(starts) - 1)
    at = sorted(set(starts))
    trunk = _member(p, s, _name(s, "trunk", hp, seed, spec), None, max(at), batch, lr, seed,
                    max(warmup, 0), hp, ("optim.schedule=constant",
                                         f"train.checkpoint_at=[{','.join(map(str, at))}]",
                                         f"train.keep_checkpoints={len(at) + 1}"),
                    role="trunk", **extra)
    out = [trunk]
    for c, d, steps, start in plan:
        label = f"C{_fmt(c)}" if c is not None else f"D{_fmt(d)}"
        out.append(_member(p, s, _name(s, label, hp, seed, spec), c, steps, batch, lr, seed,
                           max(warmup, 0), hp, ("optim.schedule=wsd",
                                                f"optim.decay_fraction={w.decay_fraction}",
                                                f"optim.decay_shape={w.decay_shape}"),
                           role="branch", after=trunk.name, branch_step=start, **extra))
    return out


def _size(p: "_Planner", spec: SweepSpec, fam: str, fs: FamilySpec, size: SizeSpec) -> _Size:
    if size.params is not None:
        n_layers, d_model = p.solve(fam, fs, size)
    else:
        n_layers, d_model = size.n_layers, size.d_model
    shape = p.shape_overrides(fam, fs, n_layers, d_model)
    extra = [*dotlist(fs.overrides), *dotlist(size.overrides)]
    error = None
    try:
        cfg0 = p.config([*shape, *extra, "train.steps=1000000"])
        total, n = model_param_counts(dataclasses.replace(cfg0.model, vocab_size=_vocab(cfg0)))
    except JaxlmError as e:
        error, cfg0, total, n = str(e), p.base, 0, 0
    seq = cfg0.data.seq_len
    fpt = flops.flops_per_token(cfg0.model, n, seq)
    budgets: list[tuple[Optional[float], float]] = []
    if spec.isoflop is not None:
        for c in spec.isoflop.budgets:
            per_token = 6.0 * n if spec.isoflop.flops_rule == "6N" else fpt
            budgets.append((c, c / per_token if per_token else 0.0))
    else:
        budgets = [(None, d) for d in spec.tokens]
    return _Size(fam, n_layers, d_model, n, total, seq, fpt, tuple(shape), tuple(extra), error,
                 f"{fam}-L{n_layers}-d{d_model}", size.tag, tuple(budgets))


def _left_out(s: _Size, spec: SweepSpec, hp: HpPoint, c: float, d: float, steps: Optional[int],
              excluded: list[Excluded]) -> bool:
    """Whether the grid rules leave out this (size, budget) (recorded in `excluded`); steps
    None: check the tokens-per-parameter window only."""
    why = (grid.window_reason(d, s.params, *spec_checks.family_window(spec, s.fam))
           if steps is None else grid.steps_reason(steps, spec.isoflop.min_steps))
    if why is not None:
        name = f"{s.base_name}-C{_fmt(c)}{hp.suffix}" + (f"-{s.tag}" if s.tag else "")
        excluded.append(Excluded(name, s.fam, s.params, c, d, why))
    return why is not None


def _plain(p: "_Planner", spec: SweepSpec, s: _Size, hp: HpPoint, c: Optional[float], d: float,
           rule: int, lr: float, excluded: list[Excluded]) -> list[Member]:
    """One run per seed of one (size, budget, hp setting), or none when the grid rules leave
    it out."""
    iso = spec.isoflop
    batch = rule
    if c is not None and s.error is None:
        if _left_out(s, spec, hp, c, d, None, excluded):
            return []
        if iso.batch_for_min_steps:
            batch = grid.batch_for_steps(d, rule, s.seq_len, iso.min_steps)
        if _left_out(s, spec, hp, c, d, grid.steps_for(d, batch, s.seq_len), excluded):
            return []
    steps = grid.steps_for(d, batch, s.seq_len)
    warmup = min(round(hp.warmup_fraction * steps), steps - 1)
    label = f"C{_fmt(c)}" if c is not None else f"D{_fmt(d)}"
    extra = {"batch_rule": rule} if batch != rule else {}
    return [_member(p, s, _name(s, label, hp, seed, spec), c, steps, batch, lr, seed, warmup,
                    hp, **extra) for seed in spec.seeds]


def expand(spec: SweepSpec) -> list[Member]:
    """All members of the sweep, in a fixed order: family, size, then budget, hp setting,
    seed; with cooldown branches (spec key wsd): family, size, hp setting, seed, then the
    trunk and its branches by budget; the held-out members (spec key holdout) last."""
    return expand_grid(spec)[0]


def expand_grid(spec: SweepSpec) -> tuple[list[Member], list[Excluded]]:
    """expand(), and the (size, budget) pairs the grid rules left out, with the reason."""
    p = _Planner(spec)
    members: list[Member] = []
    excluded: list[Excluded] = []
    for fam, fs in spec.families.items():
        lr_rule, batch_rule = fs.lr or spec.lr, fs.batch_size or spec.batch_size
        for size in fs.sizes:
            s = _size(p, spec, fam, fs, size)
            n = max(s.params, 1)
            rates = {hp: (max(1, round(grid.size_rule(batch_rule, p.base.train.batch_size, n)
                                       * hp.batch_scale)),
                          float(f"{grid.size_rule(lr_rule, p.base.optim.lr, n) * hp.lr_scale:.4g}"))
                     for hp in hp_grid(spec)}
            if spec.wsd is not None:
                for hp, (batch, lr) in rates.items():
                    for seed in spec.seeds:
                        members += _branches(p, spec, s, hp, batch, lr, seed, excluded)
                continue
            for c, d in s.budgets:
                for hp, (rule, lr) in rates.items():
                    members += _plain(p, spec, s, hp, c, d, rule, lr, excluded)
    from jaxlm.scaling.holdout_plan import holdout_members  # last; it builds on this module
    members += holdout_members(p, spec)
    seen: dict[str, int] = {}
    for m in members:
        if m.name in seen:
            raise JaxlmError(f"two sweep members are both named {m.name}: give one of the "
                             f"sizes a 'tag'")
        seen[m.name] = 1
    return members, excluded


def worker_members(members: Sequence[Member], worker: int, num_workers: int) -> list[Member]:
    """Member i belongs to worker i % num_workers."""
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise JaxlmError(f"--worker {worker} must be in [0, --num-workers {num_workers})")
    return [m for i, m in enumerate(members) if i % num_workers == worker]


def member_config(spec: SweepSpec, member: Member,
                  workdir: Optional[str | pathlib.Path] = None) -> config_lib.RunConfig:
    """A member's run config. A cooldown branch starts from its trunk's run directory,
    WORKDIR/runs/TRUNK, so it needs the sweep's `workdir`."""
    more = []
    if member.role == "branch":
        if workdir is None:
            raise JaxlmError(f"sweep member {member.name} is a cooldown branch of {member.after}:"
                             f" its config needs the sweep's workdir")
        trunk = pathlib.Path(workdir).absolute() / RUNS_DIR / member.after
        more.append(f"train.branch_from={trunk}@{member.branch_step}")
    return config_lib.load_config(spec.base_config,
                                  [*dotlist(spec.base_overrides), *member.overrides, *more])


def plan_table(members: Sequence[Member], excluded: Sequence[Excluded] = ()) -> str:
    """The dry-run table: one line per member, then those the grid rules left out and why."""
    head = (f"{'name':<34} {'N':>9} {'D':>9} {'C':>9} {'budget':>8} {'steps':>6} "
            f"{'batch':>5} {'lr':>8}")
    lines = [head]
    for m in members:
        budget = f"{m.budget:.2g}" if m.budget is not None else "-"
        line = (f"{m.name:<34} {m.params:>9,} {m.tokens:>9.3g} {m.flops:>9.3g} {budget:>8} "
                f"{m.steps:>6} {m.batch:>5} {m.lr:>8.3g}")
        if m.batch_rule is not None:
            line += f"  (batch lowered from {m.batch_rule} for isoflop.min_steps)"
        if m.error:
            line += f"  INVALID: {m.error}"
        lines.append(line)
    trunks = [m for m in members if m.role == "trunk"]
    if trunks:  # what the branches save: steps trained vs every budget trained from scratch
        branches = [m for m in members if m.role == "branch"]
        alone = sum(m.steps for m in branches)
        shared = sum(m.steps for m in trunks) + sum(m.steps - m.branch_step for m in branches)
        lines.append(f"cooldown branches: {len(trunks)} trunks + {len(branches)} branches train "
                     f"{shared:,} steps; {len(branches)} separate runs would train {alone:,} "
                     f"({1 - shared / max(alone, 1):.0%} saved)")
    lines += grid.excluded_table(excluded)
    total_c = sum(m.flops for m in members)
    total_d = sum(m.tokens for m in members)
    lines.append(f"{len(members)} members; {total_d:.3g} tokens, {total_c:.3g} FLOPs in all "
                 f"(N non-embedding; D tokens; C = jaxlm.flops count, attention included)")
    return "\n".join(lines)


__all__ = ["Member", "Excluded", "RUNS_DIR", "hp_grid", "expand", "expand_grid", "worker_members", "member_config", "plan_table", "n_heads_for",
           "model_param_counts"]
