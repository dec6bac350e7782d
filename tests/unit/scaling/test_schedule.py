"""The sweep driver (jaxlm.scaling.sweep.schedule) with a scripted launcher and a fake trainer:
largest first within the concurrency limit, `Member.after`, retries of preempted and lost
members (not of failed ones), restarts that redo nothing, records compiled into runs.csv."""

from __future__ import annotations

import dataclasses
import json

from jaxlm.scaling import results, sweep
from jaxlm.scaling.sweep.launchers import Launcher, Outcome
from jaxlm.scaling.sweep.member import run_member
from jaxlm.train.loop import RunResult
from scaling_helpers import rows, tiny_spec


def _trainer(kind):
    def train(cfg, workdir, quiet):
        if kind == "error":
            raise ValueError("bad value")
        return RunResult(workdir, cfg, cfg.train.steps, {"eval_loss": 2.0, "eval_bpb": 2.9}, [],
                         1.0, 10.0, None, preempted=kind == "preempted")
    return train


class Scripted(Launcher):
    """Runs members with a fake trainer; `script[name][attempt - 1]` says how each attempt
    ends (ok unless scripted): ok, error, preempted or lost (its worker died)."""

    name, in_process = "scripted", False

    def __init__(self, script=None, slots=2):
        self.script, self._slots = script or {}, slots
        self.started, self.max_running, self._running = [], 0, []

    def slots(self):
        return self._slots

    def submit(self, task):
        self.started.append((task.member.name, task.attempt))
        self._running.append(task)
        self.max_running = max(self.max_running, len(self._running))
        return task

    def wait(self, handles, timeout):
        task = handles[0]
        self._running.remove(task)
        plan = self.script.get(task.member.name, [])
        kind = plan[task.attempt - 1] if task.attempt <= len(plan) else "ok"
        if kind == "lost":
            return [(task, Outcome(lost="WorkerCrashedError: killed"))]
        return [(task, Outcome(row=run_member(task, _trainer(kind))))]


def _members(tmp_path, **spec):
    s = sweep.load_spec(tiny_spec(tmp_path, tokens=[128, 256, 512], **spec))
    members = sweep.expand(s)
    return s, members, [m.name for m in sorted(members, key=lambda m: -m.flops)]


def test_largest_first_within_the_limit_and_a_restart_does_nothing(tmp_path):
    spec, members, order = _members(tmp_path)
    launcher = Scripted(slots=2)
    out = sweep.run_sweep(spec, members, tmp_path / "w", launcher=launcher, show=False)
    assert [n for n, _ in launcher.started] == order and launcher.max_running == 2
    assert sorted(out.ran) == sorted(order) and not out.failed
    table = rows(tmp_path / "w" / "runs.csv")
    assert [r["name"] for r in table] == [m.name for m in members]
    assert {r["status"] for r in table} == {"ok"}
    again = Scripted()
    out = sweep.run_sweep(spec, members, tmp_path / "w", launcher=again, show=False)
    assert again.started == [] and out.skipped == [m.name for m in members]
    assert rows(tmp_path / "w" / "runs.csv") == table


def test_preempted_and_lost_members_are_retried_failed_ones_are_not(tmp_path):
    spec, members, order = _members(tmp_path)
    a, b, c, d = order[:4]
    launcher = Scripted({a: ["preempted", "ok"], b: ["lost", "lost", "lost"], c: ["error"],
                         d: ["preempted", "preempted", "preempted"]})
    out = sweep.run_sweep(spec, members, tmp_path / "w", launcher=launcher, show=False,
                          retries=2)
    tries = {n: max(k for m, k in launcher.started if m == n) for n in order}
    assert tries == {a: 2, b: 3, c: 1, d: 3, **{n: 1 for n in order[4:]}}
    assert sorted(out.retried) == sorted([a, b, b, d, d])
    assert sorted(out.failed) == sorted([b, c]) and out.preempted == d
    got = sweep.read_rows(tmp_path / "w" / "runs.csv")
    assert got[a]["status"] == "ok" and got[d]["status"] == "preempted"
    assert got[b]["error"].startswith("its worker died 3 times; last: WorkerCrashedError")
    assert got[c]["error"] == "ValueError: bad value"
    record = json.loads(results.record_path(tmp_path / "w", a).read_text())
    assert record["attempts"] == 2 and record["row"]["status"] == "ok"
    # a re-run resumes the preempted member only (failed ones stay failed)
    again = Scripted()
    sweep.run_sweep(spec, members, tmp_path / "w", launcher=again, show=False)
    assert again.started == [(d, 1)]


def test_after_waits_for_its_member_and_a_failed_one_fails_its_followers(tmp_path):
    spec, members, order = _members(tmp_path)
    by_name = {m.name: m for m in members}
    small, big, other = order[-1], order[0], order[1]
    members = [dataclasses.replace(m, after=small) if m.name == big else
               dataclasses.replace(m, after=order[2]) if m.name == other else m
               for m in members]
    launcher = Scripted({order[2]: ["error"]}, slots=1)
    out = sweep.run_sweep(spec, members, tmp_path / "w", launcher=launcher, show=False)
    started = [n for n, _ in launcher.started]
    assert started.index(big) > started.index(small)  # waited although it is the largest
    assert other not in started and sorted(out.failed) == sorted([order[2], other])
    got = sweep.read_rows(tmp_path / "w" / "runs.csv")
    assert got[other]["error"] == f"waits for {order[2]}, which failed"
    assert got[big]["status"] == "ok" and by_name[big].flops > by_name[small].flops


def test_an_older_runs_csv_still_counts_and_records_win(tmp_path):
    spec, members, order = _members(tmp_path)
    work = tmp_path / "w"
    results.append_row(work / "runs.csv", results.member_row(members[0], "ok", loss="1.5"))
    results.append_row(work / "runs.csv", results.member_row(members[1], "preempted"))
    launcher = Scripted()
    sweep.run_sweep(spec, members, work, launcher=launcher, show=False)
    assert members[0].name not in {n for n, _ in launcher.started}
    assert members[1].name in {n for n, _ in launcher.started}
    got = sweep.read_rows(work / "runs.csv")
    assert got[members[0].name]["loss"] == "1.5" and got[members[1].name]["status"] == "ok"


def test_fit_reads_a_sweep_directory_from_its_records(tmp_path, capsys):
    """`jaxlm fit --input DIR` compiles DIR/runs.csv from the members' records first."""
    import numpy as np

    from jaxlm import cli
    from scaling_helpers import isoflop_grid, random_constants

    rng = np.random.default_rng(3)
    N, D, C, L = isoflop_grid(rng, random_constants(rng), noise=0.005,
                              budgets=np.geomspace(1e17, 1e19, 4), per_budget=5)
    for i in range(N.size):
        results.write_record(tmp_path, {"name": f"t-{i}", "family": "transformer",
                                        "status": "ok", "params": int(N[i]),
                                        "tokens": int(D[i]), "flops": C[i], "loss": L[i]})
    assert cli.main(["fit", "--input", str(tmp_path), "--output", str(tmp_path / "fit"),
                     "--bootstrap", "0", "--holdout", "0"]) == 0
    assert len(rows(tmp_path / "runs.csv")) == N.size
    assert "transformer: 20 runs" in capsys.readouterr().out
    assert (tmp_path / "fit" / "fit.json").is_file()


def test_after_a_member_run_elsewhere_waits_for_its_record(tmp_path, monkeypatch, capsys):
    """--num-workers: the member named in `after` may be another worker's; this driver waits
    until that one's record says ok."""
    from jaxlm.scaling.sweep import schedule

    spec, members, order = _members(tmp_path)
    trunk = next(m for m in members if m.name == order[-1])
    branch = dataclasses.replace(members[0] if members[0] is not trunk else members[1],
                                 after=trunk.name)
    polls = []

    def sleep(seconds):  # the other worker finishes the trunk while this one waits
        polls.append(seconds)
        if len(polls) == 2:
            results.write_record(tmp_path / "w", results.member_row(trunk, "ok"))
    monkeypatch.setattr(schedule.time, "sleep", sleep)
    launcher = Scripted()
    out = sweep.run_sweep(spec, [branch], tmp_path / "w", launcher=launcher)
    assert launcher.started == [(branch.name, 1)] and out.ran == [branch.name]
    assert len(polls) == 2
    assert capsys.readouterr().err.count(f"waits for {trunk.name}, which is not this") == 1
