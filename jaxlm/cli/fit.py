"""`jaxlm fit --input runs.csv --output DIR`: fit scaling laws to a sweep's runs (or any CSV of
params, tokens/flops, loss) and write fit.json, report.md and PNG plots (jaxlm.scaling.report)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError

NAME = "fit"

EPILOG = """\
input columns (CSV header, case-insensitive):
  params           non-embedding parameter count N (required)
  loss             final loss in nats/token (required)
  tokens, flops    training tokens D and/or FLOPs C (one is enough: C = 6 N D)
  family           optional; each family is fitted on its own and the families compared:
                   differences against the first family with bootstrap intervals (frontier
                   gap, exponents, N_opt ratio; docs/compare.md)
  corpus, tokenizer, seq_len, flops_rule  optional (jaxlm sweep writes them); families that
                   differ in one get a warning: their comparison is not fair
  budget           optional IsoFLOP budget label (else budgets are found by grouping flops)
  status           optional; rows whose status is not ok/finished/done are ignored
  name / run       optional run name
  lr, batch, b2, warmup  optional hyperparameters (sweep hp axes): of several runs at one
                   (N, D) the lowest-loss one is fitted; report.md says which won
  role             optional; trunk rows (wsd trunks, constant lr) are left out

fits: Kaplan power laws L(N), L(D), compute frontier L(C); Chinchilla Approach 1 (envelope
of each size's loss curve: cooldown branches, runs at several D and, with a sweep directory as
--input, the runs' periodic evals (metrics.jsonl; --no-curves: not those)), Approach 2 (IsoFLOP
parabolas) and Approach 3 (L = E + A/N^alpha + B/D^beta, Huber loss, L-BFGS from a grid);
bootstrap intervals; N_opt, D_opt and loss predicted for --predict budgets.

diagnostics: numbers the runs do not identify are flagged in fit.json ("diagnostics"), at the
top of report.md and on the plots: IsoFLOP minima not bracketed by the sampled sizes (left out
of Approach 2; fewer than 2 bracketed budgets: Approach 2 not fitted), too few sizes per
profile, E at its bound, intervals spanning zero or orders of magnitude, negative exponents,
Approach 2 vs 3 disagreement on a. --strict: exit status 4 when any warning is raised.

examples:
  jaxlm fit --input sweeps/cpu_demo --output sweeps/cpu_demo/fit   # or .../runs.csv
  jaxlm fit --input published.csv --output fit --predict 5.76e23 --bootstrap 500
  jaxlm fit --input runs.csv --output fit --strict   # in CI: fail on a non-identified fit
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="fit scaling laws to runs.csv", epilog=EPILOG,
                       description="Fit scaling laws with uncertainty; write fit.json, report.md "
                       "and PNG plots.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="a sweep directory (its runs.csv is "
                   "compiled from the members' records first), runs.csv, or any CSV with "
                   "params, tokens or flops, loss")
    p.add_argument("--output", required=True, help="output directory (created if needed)")
    p.add_argument("--predict", type=float, nargs="*", default=[], metavar="C",
                   help="compute budgets (FLOPs) to predict N_opt, D_opt and loss at (the "
                   "largest budget in the data, x10 and x100 always)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default "
                   "200; 0 = no intervals)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--approach2", choices=("auto", "yes", "no"), default="auto",
                   help="IsoFLOP fit: auto (when >= 2 budgets hold >= 3 sizes), yes (every "
                   "budget must), no")
    p.add_argument("--budget-rtol", type=float, default=0.25, help="runs whose flops are "
                   "within this relative gap belong to one IsoFLOP budget (default 0.25)")
    p.add_argument("--no-irreducible", action="store_true",
                   help="fit L(N), L(D), L(C) as pure power laws (no irreducible term E)")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of highest-compute "
                   "runs held out to test Approach 3's extrapolation (default 0.2; 0 = none)")
    p.add_argument("--no-curves", action="store_true", help="with a sweep directory as --input: "
                   "do not give Approach 1 the runs' periodic evals (metrics.jsonl), only their "
                   "final losses")
    p.add_argument("--curve-overshoot", type=float, default=1.25, metavar="R",
                   help="a cosine/linear run's periodic eval at step s counts for Approach 1 when "
                   "train.steps <= R * s (default 1.25, Chinchilla's cycle-length tolerance; "
                   "constant-lr runs: every eval; wsd runs: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--strict", action="store_true", help="exit with status 4 (outputs still "
                   "written) when the fit has warning-level diagnostics, one line each on "
                   "stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> Status:
    if not 0 < args.level < 1:
        raise JaxlmError(f"--level must be between 0 and 1, not {args.level}")
    if args.bootstrap < 0:
        raise JaxlmError(f"--bootstrap must be >= 0, not {args.bootstrap}")
    if not 0 <= args.holdout < 0.9:
        raise JaxlmError(f"--holdout must be in [0, 0.9), not {args.holdout}")
    if not args.curve_overshoot >= 1:
        raise JaxlmError(f"--curve-overshoot must be >= 1, not {args.curve_overshoot}")
    from jaxlm.scaling import compare, diagnostics, report

    t0 = time.perf_counter()
    sweep_dir = args.input if os.path.isdir(args.input) else None
    if sweep_dir is not None:  # a sweep directory: its members' records, as runs.csv
        from jaxlm.scaling import results

        if results.read_records(args.input):
            args.input = str(results.compile_runs(args.input))
        else:  # an older sweep: rows appended to runs.csv
            args.input = os.path.join(args.input, results.RUNS_CSV)
    data = report.read_runs(args.input)
    curves = sweep_dir is not None and not args.no_curves
    if curves:
        from jaxlm.scaling import sweep_curves

        n, k = sweep_curves.attach(sweep_dir, data, args.curve_overshoot,
                                   warn=lambda m: print(m, file=sys.stderr))
        print(f"Approach 1: {n} point(s) from the periodic evals of {k} run(s) (metrics.jsonl)"
              + ("" if n or not k else "; none counts (constant lr: every eval; cosine, linear: "
                 "the last 20%; wsd: none)"))
    settings = {"approach2": args.approach2, "budget_rtol": args.budget_rtol,
                "irreducible": not args.no_irreducible, "holdout": args.holdout,
                "seed": args.seed, "huber_delta": 1e-3, "curves": curves,
                "curve_overshoot": args.curve_overshoot if curves else None}
    # bootstrap refits of degenerate data overflow on the way to being discarded: no warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        fits = report.fit_runs(data, irreducible=not args.no_irreducible, approach2=args.approach2,
                               budget_rtol=args.budget_rtol, predict_at=args.predict,
                               holdout=args.holdout, n_boot=args.bootstrap, level=args.level,
                               seed=args.seed)
        diags = diagnostics.diagnose(fits)
        comp = (compare.compare_runs(fits, data, args.level, args.seed, diags) if len(fits) > 1
                else None)
        written = report.write_outputs(fits, data, args.output, source=str(args.input),
                                       level=args.level, n_boot=args.bootstrap, inputs=settings,
                                       comparison=comp)
    for fam, f in fits.items():
        a3 = f["approach3"]
        front = f.get("L(C)", {}).get("alpha", {}).get("value")
        print(f"{fam}: {f['n_points']} runs; Approach 3 E={a3['E']['value']:.3f} "
              f"A={a3['A']['value']:.4g} B={a3['B']['value']:.4g} "
              f"alpha={a3['alpha']['value']:.3f} beta={a3['beta']['value']:.3f}"
              + (f"; frontier alpha_C={front:.3f}" if front is not None else ""))
        fitted = [(i, x.a.value) for i, x in ((1, f.approach1), (2, f.approach2),
                                              (3, f.approach3)) if x is not None and x.a is not None]
        if fitted:
            print(f"{fam}: N_opt ~ C^a, " + ", ".join(f"Approach {i} a={a:.3f}"
                                                       for i, a in fitted))
    for d in comp.differences if comp is not None else []:
        print(compare.sentence(d))
    print(f"wrote {', '.join(p.name for p in written)} to {args.output} "
          f"in {time.perf_counter() - t0:.1f}s")
    diags += comp.conditions if comp is not None else []
    warned = diagnostics.warnings(diags)
    if diags:
        print(f"{len(warned)} warning(s), {len(diags) - len(warned)} note(s) on numbers the runs "
              "do not identify: see Diagnostics at the top of report.md")
    if args.strict:
        for d in diags:
            print(f"jaxlm: {d.line()}", file=sys.stderr)
        if warned:
            return Status.FLAGGED
    return Status.OK
