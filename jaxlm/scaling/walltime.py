"""Predicted wall time of sweep members on this device (pure): a member costs a fixed time per
run (compile, setup, final eval), a time per optimizer step and its FLOPs at an achieved rate;
the three constants are calibrated from measured runs (jaxlm.scaling.plan_inputs)."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling.plan import Member

ALL = "*"  # a calibration for every family without its own


@dataclasses.dataclass(frozen=True)
class Calibration:
    """wall time of a member = compile_s + steps * step_s + flops / flops_per_s."""

    compile_s: float
    step_s: float
    flops_per_s: float
    source: str


def fit_calibration(steps, flops, wall, source: str) -> Calibration:
    """wall = compile_s + steps * step_s + flops / flops_per_s by non-negative least squares
    over measured runs (arrays of equal length, at least 3)."""
    from scipy.optimize import nnls

    steps, flops, wall = (np.asarray(v, np.float64) for v in (steps, flops, wall))
    if steps.size < 3:
        raise JaxlmError(f"{source}: {steps.size} finished run(s) with a wall time; "
                         "calibration needs at least 3")
    scale = np.array([1.0, steps.max(), flops.max()])  # conditioning
    X = np.stack([np.ones_like(steps), steps, flops], 1) / scale
    coef = nnls(X, wall)[0] / scale
    return Calibration(float(coef[0]), float(coef[1]),
                       float(1 / coef[2]) if coef[2] > 0 else float("inf"), source)


def predict_wall_time(members: Sequence[Member],
                      cal: Calibration | Mapping[str, Calibration]) -> list[float]:
    """Predicted seconds per member (trunks and branches as separate runs). `cal`: one
    calibration, or one per family (ALL: the one for families without their own)."""
    out = []
    for m in members:
        c = cal if isinstance(cal, Calibration) else cal.get(m.family, cal.get(ALL))
        if c is None:
            raise JaxlmError(f"no wall-time calibration for family {m.family}")
        rate = c.flops_per_s if c.flops_per_s > 0 else float("inf")
        out.append(c.compile_s + m.steps * c.step_s + m.flops / rate)
    return out


__all__ = ["ALL", "Calibration", "fit_calibration", "predict_wall_time"]
