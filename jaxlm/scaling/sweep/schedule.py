"""The sweep driver: hands members to a launcher as its slots free up, largest first (by
planned FLOPs), each once the member it names in `after` has finished ok (a held-out member,
role holdout: once every other member of its queue has ended); counts attempts;
keeps one progress bar; compiles runs.csv from the members' records at the end.

What a member's attempt can end in, and what the driver does:
- ok, or failed in training (a user error, a bad config): recorded once, never retried;
- preempted (its worker got a stop signal and checkpointed) or lost (its worker died): started
  again, resuming from its checkpoint, up to `retries` more times; then left preempted (a
  re-run resumes it) or recorded failed (lost);
- with the local launcher a preemption is this very process being signalled: the sweep stops
  (exit 75) and the same command resumes it. A signal to the driver of any launcher stops it
  too, after cancelling the running members (their checkpoints stay).
Finished members (a record or an older runs.csv row with status ok, or failed unless
retry_failed) are never started again, so a stopped sweep restarts where it was.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional, Sequence

from jaxlm.scaling.launch_spec import resources_for
from jaxlm.scaling.plan import Member
from jaxlm.scaling.results import compile_runs, member_row, read_record, sweep_rows, write_record
from jaxlm.scaling.spec import SweepSpec
from jaxlm.scaling.sweep.launchers import Launcher, Outcome
from jaxlm.scaling.sweep.member import Task

POLL_SEC = 1.0  # how long one wait for a member to end lasts before the driver looks again


@dataclasses.dataclass
class SweepOutcome:
    ran: list[str]
    skipped: list[str]  # already finished (or failed) before this call
    failed: list[str]
    preempted: Optional[str] = None  # a member left preempted (re-run the sweep to resume it)
    retried: list[str] = dataclasses.field(default_factory=list)  # one entry per new attempt


class _Driver:
    def __init__(self, spec: SweepSpec, members: Sequence[Member], workdir: str,
                 launcher: Launcher, retries: int, quiet: bool, log, bar):
        self.spec, self.members, self.workdir = spec, list(members), workdir
        self.launcher, self.retries, self.quiet, self.log, self.bar = (launcher, retries, quiet,
                                                                      log, bar)
        self.ok: set[str] = set()
        self.failed: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.running: dict[Any, Member] = {}
        self.queue: list[Member] = []
        self.waiting: set[str] = set()  # members run elsewhere that ours wait for
        self.out = SweepOutcome([], [], [])
        self.cache = _compilation_cache()

    # -------------------------------------------------------------- what may start
    def _after_state(self, m: Member) -> Optional[str]:
        """None: m may start; 'wait'; or why it cannot run (its predecessor failed)."""
        if m.role == "holdout" and any(x.role != "holdout" for x in
                                       [*self.queue, *self.running.values()]):
            return "wait"  # a held-out member trains after every other one
        a = m.after
        if a is None or a in self.ok:
            return None
        if a in self.failed:
            return f"waits for {a}, which failed"
        if any(x.name == a for x in self.queue) or a in {x.name for x in self.running.values()}:
            return "wait"
        row = read_record(self.workdir, a) or {}  # run by another worker, or before
        if row.get("status") == "ok":
            self.ok.add(a)
            return None
        if row.get("status") == "failed":
            return f"waits for {a}, which failed"
        if a not in self.waiting:  # said once: this driver may wait a long time here
            self.waiting.add(a)
            self.log(f"jaxlm sweep: {m.name} waits for {a}, which is not this driver's to run "
                     f"(another worker's?); looking for its record every {POLL_SEC:g}s")
        return "wait"

    def start_ready(self) -> None:
        slots = self.launcher.slots()  # asked once per round (Ray: the cluster's resources)
        for m in list(self.queue):
            if len(self.running) >= slots:
                return
            state = "invalid" if m.error else self._after_state(m)
            if state == "wait":
                continue
            self.queue.remove(m)
            if state is not None:
                self._record_failed(m, m.error or state)
                continue
            attempt = self.attempts[m.name] = self.attempts.get(m.name, 0) + 1
            task = Task(self.spec, m, self.workdir, attempt=attempt, quiet=self.quiet,
                        resources=resources_for(self.spec.launcher, m.params),
                        compilation_cache=self.cache)
            self.running[self.launcher.submit(task)] = m
            self._show()

    # -------------------------------------------------------------- what ended
    def _record_failed(self, m: Member, why: str) -> None:
        write_record(self.workdir, member_row(m, "failed", error=why),
                     attempts=self.attempts.get(m.name, 0))
        self._failed(m, why)

    def _failed(self, m: Member, why: str) -> None:
        self.failed.add(m.name)
        self.out.failed.append(m.name)
        self.log(f"jaxlm sweep: {m.name} failed: {why}")
        self.bar.update(1)
        self._show()

    def _again(self, m: Member, why: str) -> bool:
        """Puts m back at the front of the queue if it has attempts left."""
        if self.attempts[m.name] > self.retries:
            return False
        self.log(f"jaxlm sweep: {m.name} {why}; starting it again from its checkpoint "
                 f"(attempt {self.attempts[m.name] + 1} of {self.retries + 1})")
        self.out.retried.append(m.name)
        self.queue.insert(0, m)
        return True

    def ended(self, m: Member, outcome: Outcome, stopping: bool) -> bool:
        """Handles one ended attempt; False when the sweep must stop."""
        row = outcome.row or {}
        if outcome.error is not None:
            self._record_failed(m, outcome.error)
        elif outcome.lost is not None:
            if not stopping and not self._again(m, f"lost its worker ({outcome.lost})"):
                self._record_failed(m, f"its worker died {self.attempts[m.name]} times; last: "
                                       f"{outcome.lost}")
        elif row.get("status") == "preempted":
            if self.launcher.in_process or stopping:
                self.out.preempted = m.name
                return False
            if not self._again(m, "was preempted"):
                self.out.preempted = self.out.preempted or m.name
        elif row.get("status") == "failed":
            self._failed(m, row.get("error", ""))
        else:
            self.ok.add(m.name)
            self.out.ran.append(m.name)
            self.log(f"jaxlm sweep: {m.name}: eval loss {row.get('loss')} in "
                     f"{row.get('wall_time')}s")
            self.bar.update(1)
        self._show()
        return True

    def _show(self) -> None:
        self.bar.set_postfix_str(f"running {len(self.running)}, failed {len(self.failed)}",
                                 refresh=True)


def _compilation_cache() -> Optional[str]:
    """The driver's JAX compilation cache, for workers to share (None: not set)."""
    import jax

    return jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")


def drive(spec: SweepSpec, members: Sequence[Member], workdir: str | os.PathLike,
          launcher: Launcher, *, retry_failed: bool = False, retries: Optional[int] = None,
          quiet_runs: bool = True, show: bool = True) -> SweepOutcome:
    """Runs the unfinished `members` through `launcher`; writes DIR/runs.csv at the end."""
    from jaxlm import progress
    from jaxlm.train.preemption import StopSignals

    workdir = str(workdir)
    log = lambda msg: progress.log(msg, show)  # noqa: E731
    done = sweep_rows(workdir)
    finished = {"ok"} | ({"failed"} if not retry_failed else set())
    todo = [m for m in members if done.get(m.name, {}).get("status") not in finished]
    skipped = [m.name for m in members if m not in todo]
    if skipped:
        log(f"jaxlm sweep: {len(skipped)} of {len(members)} members already done in {workdir}")
    bar = progress.progress(len(members), initial=len(skipped), desc="sweep", enabled=show,
                            unit="run")
    d = _Driver(spec, members, workdir, launcher,
                spec.launcher.retries if retries is None else retries, quiet_runs, log, bar)
    d.out.skipped = skipped
    d.ok = {n for n, r in done.items() if r.get("status") == "ok"}
    # largest first (stable among equals); held-out members last
    d.queue = sorted(todo, key=lambda m: (m.role == "holdout", -m.flops))
    try:
        with StopSignals(log=log) as stop:
            while d.queue or d.running:
                d.start_ready()
                if not d.running:  # every queued member waits for one run elsewhere
                    time.sleep(POLL_SEC)
                    continue
                for handle, outcome in launcher.wait(list(d.running), POLL_SEC):
                    if not d.ended(d.running.pop(handle), outcome, bool(stop.requested)):
                        stop.requested = stop.requested or "preemption"
                left = [*d.running.values(), *d.queue]
                if stop.requested and left:
                    d.out.preempted = d.out.preempted or left[0].name
                    break
    finally:
        if d.running:
            launcher.cancel(list(d.running))
        bar.close()
        compile_runs(workdir, order=[m.name for m in members])
    return d.out


__all__ = ["SweepOutcome", "drive", "POLL_SEC"]
