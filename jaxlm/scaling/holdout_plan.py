"""Held-out members (spec key `holdout`): one run per entry and seed at an IsoFLOP budget above
the fitted ones, at a size of the entry's family (a shape or a params target solved by the
family's shape rule), with the family's lr and batch rules and the sweep's grid rules.

They are named NAME-C{budget}-holdout, carry `role="holdout"` (runs.csv's role column), come
last in the plan, and the sweep driver starts them only after every other member of its queue
has ended; `jaxlm fit` leaves them out of every fit and predicts them (holdout_runs).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from jaxlm.errors import JaxlmError
from jaxlm.scaling import grid
from jaxlm.scaling.spec import HoldoutSpec, HpPoint, SizeSpec, SweepSpec

if TYPE_CHECKING:
    from jaxlm.scaling.plan import Member

ROLE = "holdout"


def holdout_members(p, spec: SweepSpec) -> list[Member]:
    """The held-out members of `spec` (planner `p`: jaxlm.scaling.plan._Planner)."""
    from jaxlm.scaling import plan

    out: list[Member] = []
    for i, h in enumerate(spec.holdout):
        out += _one(p, spec, h, f"holdout[{i}]", plan)
    return out


def _one(p, spec: SweepSpec, h: HoldoutSpec, key: str, plan) -> list[Member]:
    fs = spec.families[h.family]
    only = dataclasses.replace(spec, isoflop=dataclasses.replace(spec.isoflop, budgets=[h.budget]))
    size = SizeSpec(n_layers=h.n_layers, d_model=h.d_model, params=h.params, tag=ROLE)
    try:
        s = plan._size(p, only, h.family, fs, size)
    except JaxlmError as e:
        raise JaxlmError(f"sweep spec key '{key}': {e}") from None
    n = max(s.params, 1)
    rule = max(1, round(grid.size_rule(fs.batch_size or spec.batch_size,
                                       p.base.train.batch_size, n)))
    lr = float(f"{grid.size_rule(fs.lr or spec.lr, p.base.optim.lr, n):.4g}")
    (c, d), = s.budgets
    excluded: list = []
    members = plan._plain(p, only, s, HpPoint(warmup_fraction=spec.warmup_fraction), c, d, rule,
                          lr, excluded)
    if excluded:
        raise JaxlmError(f"sweep spec key '{key}' is left out by the grid rules: "
                         f"{excluded[0].reason}")
    return [dataclasses.replace(m, role=ROLE) for m in members]


def is_holdout(m: Member) -> bool:
    return m.role == ROLE


__all__ = ["ROLE", "holdout_members", "is_holdout"]
