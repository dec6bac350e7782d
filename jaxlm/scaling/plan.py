"""Sweep planning: a spec expands into members, one training run each (pure, deterministic).

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

Nothing here writes: run configs are loaded (the base config file) and shapes evaluated
abstractly (jax.eval_shape), and a member's config is its base config plus overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

from jaxlm import config as config_lib
from jaxlm import flops
from jaxlm.errors import JaxlmError
from jaxlm.scaling.spec import FamilySpec, RuleSpec, SizeSpec, SweepSpec, dotlist


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
            extra = [*dotlist(fs.overrides), *dotlist(size.overrides)]
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
                                  [*dotlist(spec.base_overrides), *member.overrides])


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


__all__ = ["Member", "expand", "worker_members", "member_config", "plan_table", "n_heads_for",
           "model_param_counts"]
