"""The sweep planner: simulate a planned grid under a prior law before any compute is spent
(pure: members, a law and a noise model in; a plan out; no I/O). The predicted wall time
is jaxlm.scaling.walltime; what the planner reads or measures, jaxlm.scaling.plan_inputs.

Each draw gives every member the loss L(N, D) = E + A / N^alpha + B / D^beta of the prior law,
times exp(eps) with eps ~ Normal(0, sigma) (seed noise on log loss), and fits the draw with
jaxlm's own fitter (Approach 2 on the IsoFLOP budgets, Approach 3 on every run) with a reduced
bootstrap. Over the draws the plan says, per budget, how often the minimum is bracketed and
where the best size sits; the expected interval widths of a, b and N_opt at a target budget
(the median bootstrap width a fit would print, next to the spread of the point estimates over
draws and the coverage of the true value); which members are wasted (never near the minimum,
too few steps, outside the tokens-per-parameter window); and the sizes to add or drop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling.approach2 import bracket, fit_approach2
from jaxlm.scaling.approach3 import fit_approach3
from jaxlm.scaling.plan import Member
from jaxlm.scaling.stats import LEVEL

DEFAULT_SIGMA = 0.01  # seed noise on log loss without an earlier fit: ~1% (small LMs, one seed)
DEFAULT_DRAWS = 30
DEFAULT_BOOT = 20  # bootstrap resamples per simulated fit (a real fit uses 200)
MIN_BRACKETED = 0.9  # a budget "will be bracketed" in at least this fraction of draws
NEAR = 2  # a size within this many grid positions of the best one is "near the minimum"
MIN_STEPS = 100  # fewer optimizer steps: the loss measures optimisation progress, not capacity
TOKENS_PER_PARAM = (1.0, 1000.0)  # outside this window a member is flagged


@dataclasses.dataclass(frozen=True)
class PriorLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, with where it came from."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def __post_init__(self):
        for k in ("E", "A", "B", "alpha", "beta"):
            v = getattr(self, k)
            if not (np.isfinite(v) and (v > 0 or (k == "E" and v == 0))):
                raise JaxlmError(f"prior law ({self.source}): {k} must be a positive number, "
                                 f"not {v!r}")

    def loss(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def a(self) -> float:  # N_opt ~ C^a with C = 6 N D
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def n_opt(self, C: float) -> float:
        g = np.log(self.alpha * self.A / (self.beta * self.B)) / (self.alpha + self.beta)
        return float(np.exp(g + self.a * np.log(C / 6.0)))


# Besiroglu et al. 2024 (the Chinchilla replication) of Hoffmann et al. 2022's Approach 3.
# Tokens and parameters of billion-scale models: CPU-tiny models are far from it; prefer
# --prior fit.json from an earlier sweep of the same family.
CHINCHILLA = PriorLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                      source="Chinchilla (Besiroglu et al. 2024 replication of Hoffmann et al. "
                      "2022, Approach 3)")


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """One IsoFLOP budget over the draws."""

    budget: float
    sizes: list[int]  # the sampled sizes N (non-embedding), increasing
    bracketed: float  # fraction of draws whose minimum is bracketed (approach2.bracket)
    best_smallest: float  # fraction of draws with the lowest loss at the smallest size
    best_largest: float
    prior_N_opt: float  # the prior law's N_opt at this budget (C = 6 N D)
    suggestion: Optional[str]


@dataclasses.dataclass(frozen=True)
class Width:
    """The expected interval of one quantity. Exponents: width = hi - lo; N_opt: width as a
    factor hi / lo (log_scale)."""

    quantity: str  # e.g. "approach2.a", "approach3.N_opt@1e+13"
    truth: float  # under the prior law
    width: Optional[float]  # median over draws of the fit's bootstrap interval width
    spread: Optional[float]  # central LEVEL range of the point estimates over draws
    coverage: Optional[float]  # fraction of draws whose interval holds the truth
    fitted: float  # fraction of draws where the fit gave this quantity
    log_scale: bool = False


@dataclasses.dataclass(frozen=True)
class FamilyPlan:
    family: str
    law: dict[str, Any]
    sigma: float
    draws: int
    target_budget: float
    budgets: list[BudgetPlan]
    widths: list[Width]
    flags: dict[str, list[str]]  # member name -> reasons it is wasted or unreliable
    add: list[dict[str, Any]]  # {"params", "budgets" (those it would bracket), "why"}
    drop: list[str]  # member names never near the minimum in any draw
    skipped: Optional[str] = None  # why this family was not simulated

    def to_json(self) -> dict[str, Any]:
        from jaxlm.scaling.records import to_json

        return to_json(dataclasses.asdict(self))


def _grid(members: Sequence[Member]):
    ok = [m for m in members if m.error is None and m.role not in ("trunk", "holdout")]
    N = np.array([m.params for m in ok], np.float64)
    D = np.array([m.tokens for m in ok], np.float64)
    C = np.array([m.flops for m in ok], np.float64)
    budget = np.array([np.nan if m.budget is None else m.budget for m in ok], np.float64)
    return ok, N, D, C, budget


def _vertex(N: np.ndarray, L: np.ndarray) -> float:
    c2, c1, _ = np.polyfit(np.log(N), L, 2)  # approach2's parabola of loss in log N
    return -c1 / (2 * c2) if c2 > 0 else float("nan")


def _position(N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct sizes, each run's index among them)."""
    sizes, inv = np.unique(np.round(np.log(N), 6), return_inverse=True)
    return np.exp(sizes), inv


def _budget_draw(N, L) -> tuple[bool, int, int]:
    """(bracketed, best size index, number of sizes) of one budget's runs in one draw."""
    sizes, inv = _position(N)
    mean = np.bincount(inv, weights=L) / np.bincount(inv)
    ok = sizes.size >= 3 and bracket(N, L, _vertex(N, L) if sizes.size >= 3 else np.nan)[0]
    return bool(ok), int(np.argmin(mean)), int(sizes.size)


class _Tally:
    """Point estimates and bootstrap samples of one quantity over the draws (N_opt in log).

    A reduced bootstrap's percentile interval is too narrow (20 resamples rarely reach the 2.5%
    tails) and pooling raw deviations mixes draws of different scales, so the bootstrap's shape
    is pooled over draws in standard units (deviation from the draw's median over the half-width
    of its central 68%) and each draw's width is its own scale times the pooled tail quantiles:
    the width a full bootstrap (e.g. 200 resamples) would print; the expected width is the
    median over draws."""

    def __init__(self, truth: float, log_scale: bool = False):
        self.truth, self.log_scale = truth, log_scale
        self.values: list[float] = []
        self.scales: list[float] = []
        self.shape: list[np.ndarray] = []
        self.tries = 0

    def add(self, value: Optional[float], samples: Optional[np.ndarray] = None) -> None:
        self.tries += 1
        if value is None or not np.isfinite(value):
            return
        self.values.append(float(value))
        s = np.asarray(samples if samples is not None else [], np.float64)
        s = s[np.isfinite(s)]
        scale = (np.quantile(s, 0.84134) - np.quantile(s, 0.15866)) / 2 if s.size >= 5 else 0
        self.scales.append(float(scale) if scale > 0 else float("nan"))
        if scale > 0:
            self.shape.append((s - value) / scale)

    def width(self, name: str, level: float) -> Width:
        back = (np.exp if self.log_scale else (lambda v: v))
        truth = np.log(self.truth) if self.log_scale else self.truth
        q = (1 - level) / 2
        w = spread = cover = None
        v, sc = np.asarray(self.values), np.asarray(self.scales)
        ok = np.isfinite(sc)
        if ok.any():
            z = np.concatenate(self.shape)
            lo, hi = np.quantile(z, q), np.quantile(z, 1 - q)
            w = float(back(np.median(sc[ok]) * (hi - lo)))
            cover = float(np.mean((v[ok] + lo * sc[ok] <= truth) & (truth <= v[ok] + hi * sc[ok])))
        if v.size >= 2:
            spread = float(back(np.quantile(v, 1 - q) - np.quantile(v, q)))
        return Width(name, self.truth, w, spread, cover, v.size / max(self.tries, 1),
                     self.log_scale)


def _log_n_opt(theta: np.ndarray, C: float) -> np.ndarray:
    """log N_opt at C = 6 N D of Approach 3 thetas (K, 5) = (log A, log B, log E, alpha,
    beta)."""
    a, b, _, al, be = theta.T
    with np.errstate(all="ignore"):
        return (np.log(al) + a - np.log(be) - b) / (al + be) + be / (al + be) * np.log(C / 6)


def _fit_draw(N, D, C, budget, L, target, n_boot, seed, tallies, iso: bool) -> None:
    if "approach3.a" in tallies:
        _fit3_draw(N, D, L, target, n_boot, seed, tallies)
    if iso and "approach2.a" in tallies:
        _fit2_draw(N, D, C, budget, L, target, n_boot, seed, tallies)


def _fit3_draw(N, D, L, target, n_boot, seed, tallies) -> None:
    f3 = fit_approach3(N, D, L, n_boot=n_boot, seed=seed, n_starts=4)
    T = f3.boot if f3.boot is not None else np.zeros((0, 5))
    with np.errstate(all="ignore"):
        a3 = T[:, 4] / (T[:, 3] + T[:, 4])
    tallies["approach3.a"].add(f3.a.value, a3)
    tallies["approach3.b"].add(f3.b.value, 1 - a3)
    tallies["approach3.N_opt"].add(float(_log_n_opt(f3.theta[None], target)[0]),
                                   _log_n_opt(T, target))


def _fit2_draw(N, D, C, budget, L, target, n_boot, seed, tallies) -> None:
    try:
        f2 = fit_approach2(N, D, C, L, budget=budget, n_boot=n_boot, seed=seed)
    except JaxlmError:
        f2 = None
    if f2 is None or not f2.fitted:
        for k in ("a", "b", "N_opt"):
            tallies[f"approach2.{k}"].add(None)
        return
    B = f2.boot if f2.boot is not None else np.zeros((0, 4))
    tallies["approach2.a"].add(f2.a.value, B[:, 0])
    tallies["approach2.b"].add(f2.b.value, B[:, 2])
    lt = np.log(target)
    tallies["approach2.N_opt"].add(float(np.log(f2.k.value) + f2.a.value * lt),
                                   B[:, 1] + B[:, 0] * lt)


def _suggest(sizes: np.ndarray, best_small: float, best_large: float, bracketed: float,
             min_bracketed: float) -> tuple[Optional[str], list[float]]:
    """(a sentence, the sizes to add) for one budget."""
    if bracketed >= min_bracketed:
        return None, []
    if sizes.size < 3:
        return f"only {sizes.size} size(s): a parabola needs 3 (add sizes)", []
    lo_step, hi_step = sizes[1] / sizes[0], sizes[-1] / sizes[-2]
    add = []
    if best_small >= best_large and best_small > 0:
        add.append(float(sizes[0] / lo_step))
    if best_large >= best_small and best_large > 0:
        add.append(float(sizes[-1] * hi_step))
    if not add:  # best inside, but the noise flattens the parabola
        return ("best size inside, but the noise leaves the minimum unbracketed in "
                f"{1 - bracketed:.0%} of draws: add seeds or widen the grid"), []
    side = " and ".join(f"N~{n:,.0f}" for n in add)
    return f"minimum not bracketed in {1 - bracketed:.0%} of draws: add {side}", add


def simulate_family(members: Sequence[Member], law: PriorLaw, sigma: float,
                    draws: int = DEFAULT_DRAWS, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                    target_budget: Optional[float] = None, level: float = LEVEL,
                    min_bracketed: float = MIN_BRACKETED, near: int = NEAR,
                    min_steps: int = MIN_STEPS,
                    tokens_per_param: tuple[float, float] = TOKENS_PER_PARAM,
                    approaches: Sequence[int] = (2, 3)) -> FamilyPlan:
    """The plan of one family's members (one family; every member's `params`, `tokens`,
    `flops`, `budget` as expand() gives them) under `law` with seed noise `sigma` on log loss,
    over `draws` simulated sweeps, fitted by the `approaches` (2: IsoFLOP profiles; 3: the
    parametric law). `target_budget` (FLOPs) defaults to 10x the largest budget."""
    if sigma < 0 or not np.isfinite(sigma):
        raise JaxlmError(f"seed noise sigma must be >= 0, not {sigma}")
    if draws < 2:
        raise JaxlmError(f"draws must be at least 2, not {draws}")
    ok, N, D, C, budget = _grid(members)
    fam = members[0].family if members else "?"
    iso = bool(ok) and not np.isnan(budget).any()
    target = float(target_budget or 10 * (np.nanmax(budget) if iso else C.max() if ok else 1))
    flags = _flags(ok, min_steps, tokens_per_param)
    plan = dict(family=fam, law=dataclasses.asdict(law), sigma=sigma, draws=draws,
                target_budget=target, flags=flags)
    if N.size < 8:
        return FamilyPlan(**plan, budgets=[], widths=[], add=[], drop=[],
                          skipped=f"{N.size} valid member(s); the fits need at least 8")
    groups = [np.flatnonzero(budget == c) for c in np.unique(budget)] if iso else []
    if not set(approaches) <= {2, 3}:
        raise JaxlmError(f"approaches must be among 2 and 3, not {list(approaches)}")
    tallies = {f"approach{k}.{q}": _Tally(getattr(law, q)) for k in approaches
               for q in ("a", "b")}
    for k in approaches:
        tallies[f"approach{k}.N_opt"] = _Tally(law.n_opt(target), log_scale=True)
    rng = np.random.default_rng(seed)
    per_budget = np.zeros((len(groups), draws, 2), dtype=int)  # bracketed, best index
    dist = np.full(len(ok), np.iinfo(np.int32).max)  # closest approach to the best size
    for t in range(draws):
        L = law.loss(N, D) * np.exp(rng.normal(0.0, sigma, N.size))
        with np.errstate(all="ignore"):  # a degenerate bootstrap resample may overflow
            _fit_draw(N, D, C, budget if iso else None, L, target, n_boot, seed + t, tallies,
                      iso and len(groups) >= 2)
        for j, g in enumerate(groups):
            br, best, _ = _budget_draw(N[g], L[g])
            per_budget[j, t] = (br, best)
            dist[g] = np.minimum(dist[g], np.abs(_position(N[g])[1] - best))
    budgets, add = [], []
    for j, g in enumerate(groups):
        sizes = _position(N[g])[0]
        br, best = per_budget[j, :, 0].mean(), per_budget[j, :, 1]
        small, large = float(np.mean(best == 0)), float(np.mean(best == sizes.size - 1))
        why, more = _suggest(sizes, small, large, br, min_bracketed)
        c = float(budget[g[0]])
        budgets.append(BudgetPlan(c, [int(n) for n in sizes], float(br), small, large,
                                  law.n_opt(c), why))
        for n in more:  # one size added to the family serves every budget that needs it
            same = [a for a in add if abs(np.log(a["params"] / n)) < 0.05]
            if same:
                same[0]["budgets"].append(c)
            else:
                add.append({"params": round(n), "budgets": [c], "why": why})
    drop = []
    for i, m in enumerate(ok):
        if iso and dist[i] > near:
            flags.setdefault(m.name, []).append(
                f"never within {near} sizes of the minimum in {draws} draws")
            drop.append(m.name)
    widths = [t.width(k, level) for k, t in tallies.items() if t.tries]
    return FamilyPlan(**plan, budgets=budgets, widths=widths, add=add, drop=drop)


def _flags(ok: Sequence[Member], min_steps: int,
           tpp: tuple[float, float]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for m in ok:
        why = []
        if m.steps < min_steps:
            why.append(f"{m.steps} steps (< {min_steps}): optimisation progress, not capacity")
        r = m.tokens / max(m.params, 1)
        if not tpp[0] <= r <= tpp[1]:
            why.append(f"{r:.3g} tokens per parameter (outside [{tpp[0]:g}, {tpp[1]:g}])")
        if why:
            flags[m.name] = why
    return flags


def simulate(members: Sequence[Member], laws: dict[str, PriorLaw], sigmas: dict[str, float],
             windows: Optional[dict[str, tuple[float, float]]] = None,
             **kwargs: Any) -> list[FamilyPlan]:
    """simulate_family for every family of the members, each with its own law and sigma (and
    tokens-per-parameter flag window, where `windows` names one)."""
    fams = list(dict.fromkeys(m.family for m in members))
    windows = windows or {}
    return [simulate_family([m for m in members if m.family == f], laws[f], sigmas[f],
                            **({"tokens_per_param": windows[f]} if f in windows else {}),
                            **kwargs)
            for f in fams]


__all__ = ["PriorLaw", "CHINCHILLA", "BudgetPlan", "Width", "FamilyPlan", "simulate_family",
           "simulate", "DEFAULT_SIGMA", "DEFAULT_DRAWS", "DEFAULT_BOOT"]
