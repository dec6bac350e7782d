"""Held-out runs: runs.csv rows with role `holdout` (spec key holdout; members trained after
the others at a budget above the fitted ones). `jaxlm fit` leaves them out of every fit and
predicts each with Approach 3 fitted on the other runs of its family:

- `predicted_interval`: the percentile-bootstrap interval of the fitted law L(N, D) at the
  run's N and D (the law's uncertainty only);
- `band`: that interval widened by the fit's RMSE of log loss, z(level) * RMSE on each side
  (a run's own scatter about the law: seed noise plus misfit). A measured loss outside the
  band is a warning diagnostic (jaxlm.scaling.diagnostics).

This differs from approach3.holdout_check, which refits without the top-compute fitted runs
(an in-sample check); both are reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
from scipy.stats import norm

from jaxlm.errors import JaxlmError
from jaxlm.scaling.approach3 import Approach3Fit, approach3_eval
from jaxlm.scaling.records import Record
from jaxlm.scaling.stats import interval

ROLE = "holdout"


@dataclasses.dataclass(frozen=True)
class HoldoutRuns(Record):
    """Approach 3's predictions of a family's held-out runs against their measured losses."""

    names: list[str]
    N: list[float]
    D: list[float]
    C: list[float]
    loss: list[float]  # measured
    predicted: list[float]
    relative_error: list[float]  # (predicted - measured) / measured
    band: list[list[float]]  # predicted_interval (or the prediction) +- z * rmse in log loss
    outside: list[bool]  # measured loss outside the band
    rmse_log_loss: float  # of the Approach 3 fit
    level: float  # of the interval and the band
    predicted_interval: Optional[list[list[float]]] = None

    def _items(self) -> list[tuple[str, Any]]:
        keys = ["names", "N", "D", "C", "loss", "predicted", "relative_error"]
        items = [(k, getattr(self, k)) for k in keys]
        if self.predicted_interval is not None:
            items.append(("predicted_interval", self.predicted_interval))
        return items + [("band", self.band), ("outside", self.outside),
                        ("rmse_log_loss", self.rmse_log_loss), ("level", self.level)]


def is_holdout_row(row: dict) -> bool:
    return (row.get("role") or "").strip().lower() == ROLE


def add(held: dict, fam: str, name: str, n: float, d: float, c: float, loss: float) -> None:
    """Collects one held-out row of family `fam` (read_runs)."""
    h = held.setdefault(fam, {"names": [], "N": [], "D": [], "C": [], "L": []})
    for key, v in (("names", name), ("N", n), ("D", d), ("C", c), ("L", loss)):
        h[key].append(v)


def attach(fams: dict, held: dict, source: str) -> None:
    """Puts each family's held-out rows under fams[fam]["holdout_runs"]."""
    for fam, h in held.items():
        if fam not in fams:
            raise JaxlmError(f"{source}: family {fam!r} has only held-out rows (role holdout); "
                             "there is nothing to fit them with")
        fams[fam]["holdout_runs"] = h


def predict_runs(fit3: Approach3Fit, runs: Optional[dict], level: float) -> Optional[HoldoutRuns]:
    """Approach 3's prediction of each held-out run (None: no held-out runs)."""
    if not runs:
        return None
    N, D, C, L = (np.asarray(runs[k], np.float64) for k in ("N", "D", "C", "L"))
    pred = approach3_eval(fit3.theta, N, D)
    piv = None
    lo, hi = pred, pred
    if fit3.boot is not None and len(fit3.boot) > 1:
        with np.errstate(all="ignore"):
            pb = approach3_eval(fit3.boot, N, D)
        piv = [interval(pb[:, j], level) for j in range(N.size)]
        lo, hi = np.array([p[0] for p in piv]), np.array([p[1] for p in piv])
    z = float(norm.ppf(0.5 + level / 2))
    widen = np.exp(z * fit3.rmse_log_loss)
    band = [[float(a / widen), float(b * widen)] for a, b in zip(lo, hi)]
    outside = [not (b[0] <= x <= b[1]) for b, x in zip(band, L)]
    return HoldoutRuns(names=list(runs["names"]), N=N.tolist(), D=D.tolist(), C=C.tolist(),
                       loss=L.tolist(), predicted=pred.tolist(),
                       relative_error=((pred - L) / L).tolist(), band=band, outside=outside,
                       rmse_log_loss=float(fit3.rmse_log_loss), level=level,
                       predicted_interval=piv)


def markdown(h: HoldoutRuns) -> list[str]:
    """report.md's section on the held-out runs."""
    pct = f"{h.level * 100:g}%"
    L = ["### Held-out runs above the fitted budgets", "",
         "Trained after every other member and left out of every fit (runs.csv role "
         f"`holdout`). Approach 3's L(N, D) with its {pct} bootstrap interval; the band adds "
         f"the fit's scatter (RMSE of log loss {h.rmse_log_loss:.4f}) on each side.", "",
         "| run | N | D | C | measured | predicted [interval] | band | error |",
         "|---|---|---|---|---|---|---|---|"]
    for j, name in enumerate(h.names):
        iv = h.predicted_interval[j] if h.predicted_interval is not None else None
        pred = f"{h.predicted[j]:.4g}" + (f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "")
        flag = " (outside the band)" if h.outside[j] else ""
        L.append(f"| {name} | {h.N[j]:.4g} | {h.D[j]:.3g} | {h.C[j]:.3g} | {h.loss[j]:.4g} | "
                 f"{pred} | [{h.band[j][0]:.4g}, {h.band[j][1]:.4g}] | "
                 f"{h.relative_error[j] * 100:+.2f}%{flag} |")
    return L + [""]


__all__ = ["ROLE", "HoldoutRuns", "is_holdout_row", "add", "attach", "predict_runs", "markdown"]
