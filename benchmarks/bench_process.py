"""What jaxlm's process settings are worth: `python train.py` with and without one of them, each
run its own process (the settings take effect when a process starts), rounds alternating.

    python benchmarks/bench_process.py --compare malloc --append      # glibc's malloc kept
    python benchmarks/bench_process.py --compare split --append       # one device per core
    python benchmarks/bench_process.py --compare split --steps 200 model.max_seq_len=64 \\
        data.seq_len=64 train.batch_size=12                          # other shapes: overrides

`malloc`: JAXLM_MALLOC_TUNING=0 (glibc's malloc as it comes) against the default (freed memory
kept, `jaxlm.cli.process.keep_freed_memory`). `split`: JAXLM_CPU_DEVICES=1 (JAX's single CPU
device, multi-threaded) against the default (one single-threaded device per core). Each run
trains --steps steps with no evaluation, checkpoint or samples; tokens/s is the median of its
logged 10-step rates after the first 20 steps (compilation excluded); CPU user/system seconds
and minor page faults are the child's own (getrusage). The medians over rounds count.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile

from load import LoadMeter

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPARISONS = {  # name: ((label, environment) without the setting, (label, environment) with it)
    "malloc": (("glibc's malloc as it comes", {"JAXLM_MALLOC_TUNING": "0"}),
               ("freed memory kept (default)", {})),
    "split": (("one CPU device", {"JAXLM_CPU_DEVICES": "1"}),
              ("one device per core (default)", {})),
}
SKIP_STEPS = 20  # logged rates up to this step are left out (compilation, warm-up)


def run(env_extra: dict, steps: int, overrides: list[str], workdir: pathlib.Path) -> dict:
    """One `python train.py` run: its tokens/s, CPU seconds and page faults."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAXLM_MALLOC_TUNING",
                                                             "JAXLM_CPU_DEVICES")}
    env.update(env_extra)
    cmd = [sys.executable, str(ROOT / "train.py"), "--quiet", "--workdir", str(workdir),
           f"train.steps={steps}", "train.log_every=10", "train.eval_every=0",
           "train.checkpoint_every=0", "train.samples=0", "train.final_eval_batches=1",
           *overrides]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"train.py failed ({env_extra}):\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_sec"] for r in records
             if "tokens_per_sec" in r and "event" not in r and r.get("step", 0) > SKIP_STEPS]
    if not rates:
        raise SystemExit(f"no logged rate after step {SKIP_STEPS}: give --steps > {SKIP_STEPS + 10}")
    return {"tokens_per_sec": statistics.median(rates),
            "user_s": after.ru_utime - before.ru_utime,
            "system_s": after.ru_stime - before.ru_stime,
            "page_faults": after.ru_minflt - before.ru_minflt}


def table(results: dict[str, list[dict]], base: str) -> str:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in results.items()}
    lines = ["| setting | tokens/s (median) | tokens/s per round | vs without | CPU user s | "
             "CPU system s | page faults |", "|---|---|---|---|---|---|---|"]
    for name, rs in results.items():
        m = med[name]
        rounds = ", ".join(f"{r['tokens_per_sec']:,.0f}" for r in rs)
        lines.append(f"| {name} | {m['tokens_per_sec']:,.0f} | {rounds} | "
                     f"{m['tokens_per_sec'] / med[base]['tokens_per_sec']:.2f}x | "
                     f"{m['user_s']:.1f} | {m['system_s']:.1f} | {m['page_faults']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=sorted(COMPARISONS), required=True,
                    help="the setting measured with and without")
    ap.add_argument("--steps", type=int, default=90, help="steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="config overrides (default: the quickstart)")
    args = ap.parse_args()
    sides = COMPARISONS[args.compare]
    meter = LoadMeter()
    results: dict[str, list[dict]] = {label: [] for label, _ in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, (label, env) in enumerate(sides if r % 2 == 0 else sides[::-1]):
                with meter.timed():
                    results[label].append(run(env, args.steps, args.overrides,
                                              pathlib.Path(tmp) / f"{r}-{i}"))
                print(f"round {r + 1}: {label}: {results[label][-1]}", file=sys.stderr)
    body = table(results, sides[0][0])
    shape = " ".join(args.overrides) or "the quickstart config"
    notes = (f"`python train.py` ({shape}), {args.steps} steps per run, median of "
             f"{args.rounds} alternating rounds (tokens/s: each run's median logged rate after "
             f"step {SKIP_STEPS}; CPU seconds and minor page faults: the whole run's); "
             f"{meter.line()}.")
    print(body + "\n\n" + notes)
    if args.append:
        import _common

        _common.append_results(f"process settings: {args.compare} (bench_process)",
                               f"{notes}\n\n{body}", meter=meter)


if __name__ == "__main__":
    main()
