"""`jaxlm sweep`: expand a sweep spec (configs/sweeps/*.yaml) and run its members, each a
training run in DIR/runs/NAME, one row per run in DIR/runs.csv (jaxlm.scaling.sweep)."""

from __future__ import annotations

import argparse
import sys

from jaxlm.cli.status import Status

NAME = "sweep"

EPILOG = """\
examples:
  jaxlm sweep --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo --dry-run
  jaxlm sweep --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo
  jaxlm fit --input sweeps/cpu_demo/runs.csv --output sweeps/cpu_demo/fit

several hosts sharing a filesystem (member i runs on worker i % N; runs.csv appends are locked):
  host0$ jaxlm sweep --config X.yaml --workdir /shared/sweep --worker 0 --num-workers 2
  host1$ jaxlm sweep --config X.yaml --workdir /shared/sweep --worker 1 --num-workers 2

Re-running the same command skips members already in runs.csv (status ok, or failed unless
--retry-failed) and resumes an interrupted member from its checkpoint.

exit status:
  0 every member finished; 1 some member failed (its row in runs.csv says why); 2 bad input;
  75 stopped by SIGTERM/SIGINT (the running member checkpointed): re-run to resume.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="run a scaling sweep (many training runs) into runs.csv",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run every member of a sweep spec through the training loop; "
                       "append one row per finished run to DIR/runs.csv. Resumable.")
    p.add_argument("--config", required=True, help="sweep spec (configs/sweeps/*.yaml)")
    p.add_argument("--workdir", required=True, help="sweep directory (runs/ and runs.csv)")
    p.add_argument("--worker", type=int, default=0, help="this worker's index (default 0)")
    p.add_argument("--num-workers", type=int, default=1, help="workers sharing the sweep "
                   "(default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the members and exit")
    p.add_argument("--retry-failed", action="store_true",
                   help="run members whose last row in runs.csv is failed again")
    p.add_argument("--verbose", action="store_true", help="show each run's own progress and logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> Status:
    from jaxlm.scaling import sweep

    spec = sweep.load_spec(args.config)
    members = sweep.expand(spec)
    mine = sweep.worker_members(members, args.worker, args.num_workers)
    if args.dry_run:
        if args.num_workers > 1:
            print(f"worker {args.worker} of {args.num_workers}: {len(mine)} of "
                  f"{len(members)} members")
        print(sweep.plan_table(mine))
        return Status.OK
    from jaxlm.cli.process import quiet_checkpoints

    quiet_checkpoints()
    sweep.write_spec_copy(spec, args.workdir)
    out = sweep.run_sweep(spec, mine, args.workdir, retry_failed=args.retry_failed,
                          quiet_runs=not args.verbose)
    if out.preempted:
        print(f"jaxlm sweep: stopped at {out.preempted}; re-run the same command to resume",
              file=sys.stderr)
        return Status.PREEMPTED
    print(f"jaxlm sweep: {len(out.ran)} ran, {len(out.skipped)} already done, "
          f"{len(out.failed)} failed; rows in {args.workdir}/{sweep.RUNS_CSV}", file=sys.stderr)
    return Status.FAILED if out.failed else Status.OK
