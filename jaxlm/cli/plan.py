"""`jaxlm plan`: check a sweep grid before any compute is spent (jaxlm.scaling.planner):
simulate the spec's members under a prior law with seed noise, fit every simulated sweep with
jaxlm's fitter, predict the wall time; write DIR/plan.json and DIR/plan.md."""

from __future__ import annotations

import argparse
import json
import math
import pathlib

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError

NAME = "plan"

EPILOG = """\
examples:
  jaxlm plan --config configs/sweeps/cpu_demo.yaml --workdir sweeps/cpu_demo
  jaxlm plan --config X.yaml --workdir DIR --prior old/fit/fit.json --runs old/runs.csv
  jaxlm plan --config X.yaml --workdir DIR --law 1.8,482,2085,0.35,0.37 --sigma 0.02
  jaxlm plan --config X.yaml --workdir DIR --calibrate --target-budget 1e13

The prior law L(N, D) = E + A/N^alpha + B/D^beta: --law (five constants), else --prior
fit.json (Approach 3 of an earlier sweep, per family), else Chinchilla's (Besiroglu et al.
2024) -- fitted on billion-parameter models, far from CPU-sized ones: prefer an earlier fit.
Seed noise (standard deviation of log loss across seeds): --sigma, else the replicate seeds of
--prior fit.json (its seed_noise), else those of --runs, else Approach 3's RMSE in --prior
fit.json (an upper bound), else 0.01.
Wall time: --calibrate trains the smallest and largest member for a few steps (in
DIR/calibration/); --runs fits it to an earlier sweep's wall times on this device.

exit status: 0 plan written; 2 bad input.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="check a sweep grid before running it (simulated fits, "
                       "bracketing, interval widths, wall time)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Simulate the sweep spec's exact grid under a prior scaling "
                       "law with seed noise, fit each simulated sweep with jaxlm's own fitter "
                       "(Approaches 2 and 3), and report per budget whether the IsoFLOP minimum "
                       "will be bracketed, the expected interval widths of a, b and N_opt, "
                       "wasted members, members to add or drop, and the predicted wall time. "
                       "Writes DIR/plan.json and DIR/plan.md; trains nothing unless --calibrate.")
    p.add_argument("--config", required=True, help="sweep spec (configs/sweeps/*.yaml)")
    p.add_argument("--workdir", required=True, help="where plan.json and plan.md go")
    p.add_argument("--prior", default=None, metavar="chinchilla|FIT.json",
                   help="prior law: 'chinchilla' (default) or an earlier sweep's fit.json")
    p.add_argument("--law", default=None, metavar="E,A,B,ALPHA,BETA",
                   help="explicit prior constants (every family)")
    p.add_argument("--sigma", type=float, default=None, help="seed noise on log loss")
    p.add_argument("--runs", default=None, metavar="RUNS.csv",
                   help="an earlier sweep's runs.csv (or its directory): seed noise from its "
                   "replicate seeds, wall-time calibration from its wall times")
    p.add_argument("--calibrate", action="store_true",
                   help="train 2 members for a few steps to calibrate the wall time")
    p.add_argument("--target-budget", type=float, default=None, metavar="C",
                   help="FLOPs at which to forecast N_opt (default 10x the largest budget)")
    p.add_argument("--draws", type=int, default=30, help="simulated sweeps (default 30)")
    p.add_argument("--boot", type=int, default=20,
                   help="bootstrap resamples per simulated fit (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.draws < 2:
        raise JaxlmError(f"--draws must be at least 2, not {args.draws}")
    if args.boot < 0:
        raise JaxlmError(f"--boot must be >= 0, not {args.boot}")
    if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma >= 0):
        raise JaxlmError(f"--sigma must be a number >= 0, not {args.sigma}")
    tb = args.target_budget
    if tb is not None and not (math.isfinite(tb) and tb > 0):
        raise JaxlmError(f"--target-budget must be a positive number of FLOPs, not {tb}")
    if args.law is not None and args.prior is not None:
        raise JaxlmError("give --law or --prior, not both")


def _sigmas(args, families) -> tuple[dict[str, float], dict[str, str]]:
    from jaxlm.scaling import plan_inputs, planner

    out, why = {}, {}
    seeds = plan_inputs.seed_noise(args.runs) if args.runs else {}
    fitted = (plan_inputs.fit_noise(args.prior) if args.prior not in (None, "chinchilla")
              else {})
    for f in families:
        fit_seeds = f in fitted and fitted[f][1].startswith("replicate")
        if args.sigma is not None:
            out[f], why[f] = args.sigma, "--sigma"
        elif fit_seeds or (f in fitted and f not in seeds):
            out[f], why[f] = fitted[f]
        elif f in seeds:  # replicate seeds of --runs: better than a fit's RMSE
            out[f], why[f] = seeds[f], f"replicate seeds in {args.runs}"
        else:
            out[f], why[f] = planner.DEFAULT_SIGMA, "default"
    return out, why


def run(args: argparse.Namespace) -> Status:
    _check(args)
    from jaxlm.scaling import plan_inputs, plan_report, planner, spec_checks, walltime
    from jaxlm.scaling.plan import expand
    from jaxlm.scaling.spec import load_spec

    spec = load_spec(args.config)
    families = list(spec.families)
    laws = ({f: plan_inputs.parse_law(args.law) for f in families} if args.law
            else plan_inputs.load_prior(args.prior, families))
    sigmas, sigma_src = _sigmas(args, families)
    cal = plan_inputs.calibration_from_runs(args.runs) if args.runs else None
    members = expand(spec)
    if args.calibrate:  # measured on this device now: wins over an earlier sweep's times
        cal = plan_inputs.calibrate_by_training(spec, members, args.workdir)
    windows = {f: tuple(w) for f in families
               if (w := spec_checks.family_window(spec, f)[0]) is not None}
    plans = planner.simulate(members, laws, sigmas, windows, draws=args.draws, n_boot=args.boot,
                             seed=args.seed, target_budget=args.target_budget)
    times = walltime.predict_wall_time(members, cal) if cal is not None else None
    settings = {"config": str(args.config), "draws": args.draws, "boot": args.boot,
                "seed": args.seed, "sigma_source": sigma_src}
    out = pathlib.Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(
        plan_report.plan_json(plans, members, times, cal, settings), indent=1) + "\n")
    (out / "plan.md").write_text(plan_report.plan_markdown(plans, members, times, cal))
    print(plan_report.plan_summary(plans, times))
    print(f"plan written to {out / 'plan.md'} and {out / 'plan.json'}")
    return Status.OK
