"""Scaling sweeps: a spec (configs/sweeps/*.yaml) expands into members, one training run each.

The spec's schema and loading are in jaxlm.scaling.spec (its `launcher:` section in
jaxlm.scaling.launch_spec), the expansion into members in jaxlm.scaling.plan, the result
records and runs.csv in jaxlm.scaling.results. This package runs the members:

- `member`: one member on a worker: trains it in DIR/runs/NAME (resuming from its
  checkpoint) and writes its record DIR/runs/NAME.result.json (atomic rename, no locks);
- `launchers`: where members run: `local` (this process, one at a time; the default),
  `ray` (ray_launcher: a Ray task each, with its resources), `slurm` (slurm_launcher: a
  submitit job each);
- `schedule`: the driver: largest member first as slots free up, `Member.after` honoured,
  preempted or lost members retried (resuming), finished ones never redone; one progress bar;
  runs.csv compiled from the records at the end.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

# the names `jaxlm sweep` and the notebooks use, importable from here as before the split
from jaxlm.scaling.plan import (Member, expand, expand_grid, member_config, model_param_counts,
                                n_heads_for, plan_table, worker_members)
from jaxlm.scaling import results
from jaxlm.scaling.results import (COLUMNS, RUNS_CSV, RUNS_DIR, append_row, compile_runs,
                                   read_rows, sweep_rows)
from jaxlm.scaling.spec import SweepSpec, load_spec, validate_spec, write_spec_copy
from jaxlm.scaling.sweep.launchers import Launcher, LocalLauncher, make_launcher
from jaxlm.scaling.sweep.schedule import SweepOutcome, drive


def run_sweep(spec: SweepSpec, members: Sequence[Member], workdir: str | os.PathLike, *,
              retry_failed: bool = False, quiet_runs: bool = True, show: bool = True,
              train_fn: Optional[Callable] = None, launcher: Optional[Launcher] = None,
              retries: Optional[int] = None) -> SweepOutcome:
    """Runs the unfinished `members` in workdir/runs/NAME through `launcher` (default: this
    process, through `train_fn`, default jaxlm.train.loop.train); writes workdir/runs.csv."""
    launcher = launcher or LocalLauncher(train_fn)
    return drive(spec, members, workdir, launcher, retry_failed=retry_failed, retries=retries,
                 quiet_runs=quiet_runs, show=show)


__all__ = ["run_sweep", "SweepOutcome", "RUNS_DIR", "SweepSpec", "Member", "load_spec",
           "validate_spec", "write_spec_copy", "expand", "expand_grid", "worker_members", "member_config",
           "plan_table", "n_heads_for", "model_param_counts", "read_rows", "append_row",
           "COLUMNS", "RUNS_CSV", "sweep_rows", "compile_runs", "Launcher", "LocalLauncher",
           "make_launcher"]
