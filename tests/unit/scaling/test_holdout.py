"""Held-out members (spec key holdout): expanded last and tagged role=holdout, trained after
every other member, left out of every fit and predicted by Approach 3 (fit.json holdout_runs,
report.md, a warning when the measured loss is outside the band)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling import diagnostics, report, sweep
from jaxlm.scaling.approach3 import approach3_eval
from jaxlm.scaling.sweep.launchers import Launcher, Outcome
from jaxlm.scaling.sweep.member import run_member
from jaxlm.train.loop import RunResult
from scaling_helpers import isoflop_grid, law3, rows, tiny_spec, write_csv

ISO = {"budgets": [2.0e6, 4.0e6], "min_steps": 1}
HOLD = [{"family": "transformer", "n_layers": 1, "d_model": 16, "budget": 1.2e7}]


def _spec(tmp_path, **changes):
    spec = {"tokens": [], "isoflop": ISO, "holdout": HOLD, **changes}
    return tiny_spec(tmp_path, **spec)


def test_a_holdout_member_is_expanded_last_and_tagged(tmp_path):
    members = sweep.expand(sweep.load_spec(_spec(tmp_path)))
    last = members[-1]
    assert last.role == "holdout" and last.name == "transformer-L1-d16-C1.2e7-holdout"
    assert last.budget == 1.2e7 and abs(last.flops / 1.2e7 - 1) < 0.1
    assert [m.role for m in members[:-1]] == [""] * (len(members) - 1)
    assert max(m.flops for m in members) == last.flops  # largest, yet last


class _Slots(Launcher):
    """Two slots, a fake trainer; records who was running when each member started."""

    name, in_process = "two", False

    def __init__(self):
        self.started, self._running = [], []

    def slots(self):
        return 2

    def submit(self, task):
        self.started.append((task.member.name, [t.member.name for t in self._running]))
        self._running.append(task)
        return task

    def wait(self, handles, timeout):
        task = handles[0]
        self._running.remove(task)
        fake = lambda cfg, w, quiet: RunResult(w, cfg, cfg.train.steps, {"eval_loss": 2.0},  # noqa
                                               [], 1.0, 1.0, None)
        return [(task, Outcome(row=run_member(task, fake)))]


def test_the_holdout_member_trains_after_every_other_one(tmp_path):
    spec = sweep.load_spec(_spec(tmp_path))
    members = sweep.expand(spec)
    launcher = _Slots()
    sweep.run_sweep(spec, members, tmp_path / "w", launcher=launcher, show=False)
    names = [n for n, _ in launcher.started]
    assert names[-1] == members[-1].name and launcher.started[-1][1] == []
    table = {r["name"]: r for r in rows(tmp_path / "w" / "runs.csv")}
    assert table[members[-1].name]["role"] == "holdout"


@pytest.mark.parametrize("changes, key", [
    ({"holdout": [{**HOLD[0], "budget": 3.0e6}]}, "holdout[0].budget"),
    ({"holdout": [{**HOLD[0], "family": "gru"}]}, "holdout[0].family"),
    ({"holdout": [{**HOLD[0], "width": 3}]}, "holdout[0].width"),
    ({"holdout": [{"family": "lstm", "budget": 1e7}]}, "holdout[0]"),
    ({"holdout": HOLD, "isoflop": None, "tokens": [256]}, "holdout"),
])
def test_holdout_spec_errors_are_one_line_naming_the_key(tmp_path, changes, key):
    with pytest.raises(JaxlmError) as info:
        sweep.load_spec(_spec(tmp_path, **changes))
    msg = str(info.value)
    assert f"'{key}'" in msg and "\n" not in msg, msg


K = dict(E=1.8, A=400.0, B=1500.0, al=0.34, be=0.30)


def _csv(tmp_path, held_loss_factor=None):
    N, D, C, L = isoflop_grid(np.random.default_rng(0), K, 0.01, budgets=[1e17, 1e18, 1e19],
                              per_budget=5)
    table = [{"name": f"r{i}", "family": "t", "params": n, "tokens": d, "flops": c, "loss": l,
              "role": ""} for i, (n, d, c, l) in enumerate(zip(N, D, C, L))]
    if held_loss_factor is not None:
        n, d = 3e9, 1e20 / (6 * 3e9)
        table.append({"name": "big-holdout", "family": "t", "params": n, "tokens": d,
                      "flops": 1e20, "loss": law3(n, d, **K) * held_loss_factor,
                      "role": "holdout"})
    return write_csv(tmp_path / f"runs{held_loss_factor}.csv", table)


def _fit(path):
    data = report.read_runs(path)
    return data, report.fit_runs(data, n_boot=8, holdout=0.0)["t"]


def test_fit_leaves_the_holdout_run_out_and_predicts_it(tmp_path):
    _, plain = _fit(_csv(tmp_path))
    data, fit = _fit(_csv(tmp_path, held_loss_factor=1.0))
    assert data["t"]["N"].size == plain.n_points == fit.n_points
    for k in ("E", "A", "B", "alpha", "beta"):  # the same fit as without the row
        assert getattr(fit.approach3, k).value == getattr(plain.approach3, k).value
    assert fit.approach2.a.value == plain.approach2.a.value
    h = fit.holdout_runs
    assert h.names == ["big-holdout"] and plain.holdout_runs is None
    want = approach3_eval(fit.approach3.theta, [3e9], [1e20 / 1.8e10])[0]
    assert h.predicted[0] == pytest.approx(want)
    assert h.relative_error[0] == pytest.approx((want - h.loss[0]) / h.loss[0])
    assert abs(h.relative_error[0]) < 0.03 and h.outside == [False]
    lo, hi = h.predicted_interval[0]
    assert h.band[0][0] < lo <= want <= hi < h.band[0][1]
    assert not [d for d in diagnostics.diagnose({"t": fit}) if d.code == "holdout_outside"]
    doc = json.loads(json.dumps(fit.to_json(), allow_nan=False))  # as fit.json holds it
    assert doc["holdout_runs"]["names"] == ["big-holdout"] and "holdout_runs" not in plain
    assert "### Held-out runs above the fitted budgets" in report.markdown({"t": fit}, "x", 0.95, 8)


def test_a_holdout_run_off_the_law_is_a_warning(tmp_path):
    _, fit = _fit(_csv(tmp_path, held_loss_factor=1.15))
    assert fit.holdout_runs.outside == [True]
    warned = [d for d in diagnostics.warnings(diagnostics.diagnose({"t": fit}))
              if d.code == "holdout_outside"]
    assert len(warned) == 1 and "big-holdout" in warned[0].detail
