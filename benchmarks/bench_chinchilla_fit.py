"""Chinchilla Approach 3 on the 245 points reconstructed from Hoffmann et al.'s Figure 4.

Reads `--data PATH/svg_extracted_data.csv`: Epoch AI's reconstruction published with Besiroglu et
al. 2024 (repository epoch-research/analyzing-chinchilla, data/svg_extracted_data.csv; it carries
no license, so jaxlm does not ship it and nothing downloads it: fetch it yourself), drops the 5 highest-loss points as Besiroglu et al. did,
fits L(N, D) = E + A/N^alpha + B/D^beta with jaxlm.scaling.fit.fit_approach3 (Huber delta 1e-3,
L-BFGS from the 4,500-point initial grid), compares with their published fit, times the fit
with and without the bootstrap, and appends the result to benchmarks/RESULTS.md.

    python benchmarks/bench_chinchilla_fit.py --data PATH [--bootstrap 200] [--repeats 3]
        [--report DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import pathlib
import platform
import sys
import time

import numpy as np
import scipy

from jaxlm.scaling import fit as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Besiroglu et al. 2024, Table 1 / the data folder's README
PUBLISHED = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
TOLERANCE = {"E": ("abs", 0.03), "A": ("rel", 0.10), "B": ("rel", 0.10),
             "alpha": ("abs", 0.005), "beta": ("abs", 0.005)}


def load(path: pathlib.Path):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    keep = np.sort(np.argsort(L)[:-5])  # drop the 5 highest-loss points
    N, C, L = N[keep], C[keep], L[keep]
    return N, C / (6 * N), C, L, len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True,
                    help="svg_extracted_data.csv from epoch-research/analyzing-chinchilla")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    ap.add_argument("--report", help="also write fit.json/report.md/plots (jaxlm fit) here")
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    path = pathlib.Path(args.data)
    if not path.is_file():
        print(f"data not found: {path} (see the benchmark's docstring)", file=sys.stderr)
        return 2
    N, D, C, L, n_all = load(path)

    from load import LIMIT_CORES, LoadMeter

    meter = LoadMeter()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        with meter.timed():
            f = F.fit_approach3(N, D, L, n_boot=0)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with meter.timed():
        fb = F.fit_approach3(N, D, L, n_boot=args.bootstrap, seed=0)
    t_boot = time.perf_counter() - t0
    pred = F.predict(fb, 5.76e23)  # Chinchilla's own training budget

    ok_all, lines = True, []
    for k, pub in PUBLISHED.items():
        got = f[k]["value"]
        kind, tol = TOLERANCE[k]
        err = abs(got - pub) / (pub if kind == "rel" else 1)
        ok = err <= tol
        ok_all &= ok
        lo, hi = fb[k]["interval"]
        lines.append(f"| {k} | {got:.4g} | [{lo:.4g}, {hi:.4g}] | {pub:.4g} | "
                     f"{'%.1f%%' % (100 * err) if kind == 'rel' else '%.4f' % err} | "
                     f"{'yes' if ok else 'NO'} |")
    table = ["| constant | jaxlm | 95% bootstrap interval | Besiroglu et al. | difference | "
             "within tolerance |", "|---|---|---|---|---|---|", *lines]
    summary = [
        f"Points: {len(N)} of {n_all} (5 highest-loss dropped); Huber objective at the fit "
        f"{f['objective']:.6g} (mean Huber / delta); RMSE of log loss {f['rmse_log_loss']:.4f}.",
        f"Fit time (grid of {len(F.GRID)} initial values scored at once, L-BFGS from the best 8): "
        f"best of {args.repeats}: {min(times):.2f} s; with {args.bootstrap} bootstrap resamples: "
        f"{t_boot:.2f} s; {meter.line()}.",
        f"Compute-optimal exponents: N_opt ~ C^{fb['a']['value']:.3f} "
        f"[{fb['a']['interval'][0]:.3f}, {fb['a']['interval'][1]:.3f}], D_opt ~ "
        f"C^{fb['b']['value']:.3f}. At C = 5.76e23 (Chinchilla's budget): N_opt = "
        f"{pred['N_opt'][0] / 1e9:.1f}B [{pred['N_opt_interval'][0][0] / 1e9:.1f}B, "
        f"{pred['N_opt_interval'][0][1] / 1e9:.1f}B], D_opt = {pred['D_opt'][0] / 1e12:.2f}T "
        f"tokens, loss {pred['loss'][0]:.3f}.",
    ]
    print("\n".join(table + [""] + summary))
    print("recovered Besiroglu et al.'s fit" if ok_all else "DID NOT recover the published fit")

    if args.report:
        from jaxlm.scaling import report

        data = {"chinchilla": {"N": N, "D": D, "C": C, "L": L, "names": [], "budget": None}}
        fits = report.fit_runs(data, n_boot=args.bootstrap, approach2="no")
        report.write_outputs(fits, data, args.report, source=str(path), n_boot=args.bootstrap)
        print(f"report written to {args.report}")

    if not args.no_append and not meter.quiet():
        print(f"not appending to RESULTS.md: {meter.line()}; a quiet machine allows "
              f"{LIMIT_CORES} cores (the fitted constants above do not depend on it)",
              file=sys.stderr)
    elif not args.no_append:
        cpu = platform.processor() or platform.machine()
        entry = [
            "", f"## {datetime.date.today()} — Chinchilla Approach 3 recovery (jaxlm fit), CPU",
            "",
            f"Device: {os.cpu_count()}-core {cpu} CPU, no accelerator; {meter.line()}. "
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy "
            f"{scipy.__version__}.",
            f"Data: `{path.name}` (Besiroglu et al. 2024's reconstruction of Hoffmann et al. "
            "2022, Figure 4; not shipped, see the script's docstring).",
            f"Command: `python benchmarks/bench_chinchilla_fit.py --data {path.name} "
            f"--bootstrap {args.bootstrap} --repeats {args.repeats}`", "", *table, "", *summary, "",
        ]
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n".join(entry))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
