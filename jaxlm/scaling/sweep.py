"""Scaling sweeps: a spec (configs/sweeps/*.yaml) expands into members, one training run each.

The spec's schema and loading are in jaxlm.scaling.spec, the expansion into members in
jaxlm.scaling.plan, runs.csv in jaxlm.scaling.results; this module runs the members.

Running (`run_sweep`): each member trains in DIR/runs/NAME through jaxlm.train.loop.train (the
code `train.py` runs) and one row is appended to DIR/runs.csv (COLUMNS). Appends hold an
exclusive POSIX lock (fcntl.lockf) on runs.csv, so workers on hosts that share the filesystem
(`--worker I --num-workers N`: member i belongs to worker i % N) append to one file; readers
take the last row per name. Members whose last row is ok (or failed, unless retry_failed) are
not redone; a preempted or interrupted member is re-run on its run directory, which resumes it
from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Callable, Optional, Sequence

from jaxlm import flops
from jaxlm.errors import JaxlmError
# the names `jaxlm sweep` and the notebooks use, importable from here as before the split
from jaxlm.scaling.plan import (RUNS_DIR, Member, expand, member_config, model_param_counts,
                                n_heads_for, plan_table, worker_members)
from jaxlm.scaling.results import (COLUMNS, RUNS_CSV, append_row, fmt_loss, member_row,
                                   read_rows)
from jaxlm.scaling.spec import SweepSpec, load_spec, validate_spec, write_spec_copy


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
                        append_row(csv_path, member_row(m, "failed", error=m.error))
                    bar.update(1)
                    continue
                run_dir = workdir / RUNS_DIR / m.name
                t0 = time.time()
                try:
                    result = train_fn(member_config(spec, m, workdir), run_dir, quiet=quiet_runs)
                except Exception as e:  # noqa: BLE001 - recorded; the sweep goes on
                    reason = _one_line(e)
                    out.failed.append(m.name)
                    log(f"jaxlm sweep: {m.name} failed: {reason}")
                    if writes():
                        append_row(csv_path, member_row(m, "failed", error=reason,
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
                        append_row(csv_path, member_row(
                            m, "preempted", **extra, error=f"stopped at step {result.final_step}"))
                    break
                e = result.eval
                extra.update(train_loss=fmt_loss(_final_train_loss(run_dir)),
                             loss=fmt_loss(e.get("eval_loss")),
                             eval_bpb=fmt_loss(e.get("eval_bpb")))
                if writes():
                    append_row(csv_path, member_row(m, "ok", **extra))
                out.ran.append(m.name)
                log(f"jaxlm sweep: {m.name}: eval loss {e.get('eval_loss', float('nan')):.4f} "
                    f"in {result.wall_time:.0f}s")
                bar.update(1)
    finally:
        bar.close()
    return out


__all__ = ["run_sweep", "SweepOutcome", "RUNS_DIR", "SweepSpec", "Member", "load_spec",
           "validate_spec", "write_spec_copy", "expand", "worker_members", "member_config",
           "plan_table", "n_heads_for", "model_param_counts", "read_rows", "append_row",
           "COLUMNS", "RUNS_CSV"]
