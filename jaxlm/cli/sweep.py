"""`jaxlm sweep`: expand a sweep spec (configs/sweeps/*.yaml) and run its members, each a
training run in DIR/runs/NAME, here or on Ray or SLURM (`--launcher`); each member's result is
a record DIR/runs/NAME.result.json, compiled into DIR/runs.csv (jaxlm.scaling.sweep)."""

from __future__ import annotations

import argparse
import sys

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError
from jaxlm.scaling.launch_spec import LAUNCHERS

NAME = "sweep"

EPILOG = """\
examples:
  jaxlm plan --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo   # check the grid
  jaxlm sweep --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo --dry-run
  jaxlm sweep --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo
  jaxlm fit --input sweeps/cpu_demo --output sweeps/cpu_demo/fit

on a cluster (`pip install jaxlm[cluster]`; settings in the spec's `launcher:` section):
  jaxlm sweep --config X.yaml --workdir /shared/sweep --launcher ray            # local Ray
  jaxlm sweep --config X.yaml --workdir /shared/sweep --launcher ray --address auto
  jaxlm sweep --config X.yaml --workdir /shared/sweep --launcher slurm

Members start largest first as workers free up; a member preempted or whose worker died is
started again (resuming from its checkpoint) up to launcher.retries times; a member that
failed in training is recorded once. Re-running the same command skips finished members
(status ok, or failed unless --retry-failed) and resumes the others from their checkpoints.

exit status:
  0 every member finished; 1 some member failed (its row in runs.csv says why); 2 bad input;
  75 stopped by SIGTERM/SIGINT, or a member still preempted: re-run to resume.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="run a scaling sweep (many training runs) into runs.csv",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run every member of a sweep spec through the training loop; "
                       "append one row per finished run to DIR/runs.csv. Resumable.")
    p.add_argument("--config", required=True, help="sweep spec (configs/sweeps/*.yaml)")
    p.add_argument("--workdir", required=True, help="sweep directory (runs/ and runs.csv)")
    p.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="where members run (default: the spec's launcher.kind, else local)")
    p.add_argument("--address", default=None, help="ray: the cluster to join (e.g. auto, or "
                   "ray://HOST:10001); default: the spec's launcher.address, else a local one")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="members running at once (default: the spec's launcher.max_concurrent)")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="new attempts for a preempted or lost member (default: the spec's "
                   "launcher.retries)")
    p.add_argument("--worker", type=int, default=0, help="local launcher on several hosts: "
                   "this worker's index (member i runs on worker i %% N; default 0)")
    p.add_argument("--num-workers", type=int, default=1, help="local launcher: workers "
                   "sharing the sweep directory (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the members and exit")
    p.add_argument("--retry-failed", action="store_true",
                   help="run members whose last row in runs.csv is failed again")
    p.add_argument("--verbose", action="store_true", help="show each run's own progress and logs")
    p.set_defaults(func=run)


def _launcher_settings(spec, args: argparse.Namespace):
    """The spec with the command line's launcher flags over its `launcher:` section."""
    import dataclasses

    for flag, value in (("--max-concurrent", args.max_concurrent), ("--retries", args.retries)):
        if value is not None and value < 0:
            raise JaxlmError(f"{flag} must be >= 0, not {value}")
    changes = {k: v for k, v in (("kind", args.launcher), ("address", args.address),
                                 ("max_concurrent", args.max_concurrent),
                                 ("retries", args.retries)) if v is not None}
    kind = changes.get("kind", spec.launcher.kind)
    if args.num_workers > 1 and kind != "local":
        raise JaxlmError(f"--num-workers splits a sweep between local launchers; with "
                         f"--launcher {kind} one driver hands out every member")
    return dataclasses.replace(spec, launcher=dataclasses.replace(spec.launcher, **changes))


def run(args: argparse.Namespace) -> Status:
    from jaxlm.scaling import sweep

    spec = _launcher_settings(sweep.load_spec(args.config), args)
    members, excluded = sweep.expand_grid(spec)
    mine = sweep.worker_members(members, args.worker, args.num_workers)
    if args.dry_run:
        if args.num_workers > 1:
            print(f"worker {args.worker} of {args.num_workers}: {len(mine)} of "
                  f"{len(members)} members")
        print(sweep.plan_table(mine, excluded))
        return Status.OK
    from jaxlm.cli.process import quiet_checkpoints

    quiet_checkpoints()
    launcher = sweep.make_launcher(spec.launcher, args.workdir, verbose=args.verbose)
    try:
        sweep.write_spec_copy(spec, args.workdir)
        out = sweep.run_sweep(spec, mine, args.workdir, retry_failed=args.retry_failed,
                              quiet_runs=not args.verbose, launcher=launcher)
    finally:
        launcher.close()
    if out.preempted:
        print(f"jaxlm sweep: stopped at {out.preempted}; re-run the same command to resume",
              file=sys.stderr)
        return Status.PREEMPTED
    retried = f", {len(out.retried)} retried" if out.retried else ""
    print(f"jaxlm sweep: {len(out.ran)} ran, {len(out.skipped)} already done, "
          f"{len(out.failed)} failed{retried}; rows in {args.workdir}/{sweep.RUNS_CSV}",
          file=sys.stderr)
    return Status.FAILED if out.failed else Status.OK
