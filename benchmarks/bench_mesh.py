"""Compile time and step time of one config on different meshes of (fake) devices.

Each mesh runs `python train.py` in its own process (the device count is fixed when JAX starts),
with rounds alternating the meshes so that machine noise spreads over all of them. Reads the
`compiled` record and the logged tokens/s from each run's metrics.jsonl; prints a Markdown table
and, with --append, adds it to benchmarks/RESULTS.md with date, device and command.

    python benchmarks/bench_mesh.py --steps 30 --rounds 2 --append
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MESHES = {  # name: (fake CPU devices, overrides)
    "1 device": (1, ["mesh.data=1"]),
    "data=8": (8, ["mesh.data=8"]),
    "fsdp=8": (8, ["mesh.data=1", "mesh.fsdp=8"]),
    "data=2 fsdp=2 tensor=2": (8, ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]),
}


def run(name: str, steps: int, extra: list[str], workdir: pathlib.Path) -> dict:
    n, overrides = MESHES[name]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    cmd = [sys.executable, str(ROOT / "train.py"), "--quiet", "--workdir", str(workdir),
           f"train.steps={steps}", f"train.log_every={steps // 3}", "train.eval_every=0",
           "train.checkpoint_every=0", "train.samples=0", "train.final_eval_batches=1",
           "optim.warmup_steps=1", *overrides, *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    recs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    compiled = next(r for r in recs if r.get("event") == "compiled")
    start = next(r for r in recs if r.get("event") == "start")
    # the logged rates after the first log interval exclude compilation
    rates = [r["tokens_per_sec"] for r in recs if "event" not in r][1:]
    tokens_per_step = start["batch_size"] * start["seq_len"]
    rate = statistics.median(rates)
    return {"compile_s": compiled["compile_time_sec"], "tokens_per_sec": rate,
            "step_ms": 1000 * tokens_per_step / rate, "params": start["params"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="extra config overrides (default: quickstart)")
    args = ap.parse_args()
    from load import LoadMeter

    meter = LoadMeter()
    results: dict[str, list[dict]] = {name: [] for name in MESHES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in MESHES:
                wd = pathlib.Path(tmp) / f"{r}-{name.replace(' ', '_')}"
                with meter.timed():
                    results[name].append(run(name, args.steps, args.overrides, wd))
                print(f"round {r + 1}: {name}: {results[name][-1]}", file=sys.stderr)
    base = statistics.median(x["step_ms"] for x in results["1 device"])
    lines = ["| mesh | compile (s) | step (ms) | tokens/s | step time vs 1 device |",
             "|---|---|---|---|---|"]
    for name, rs in results.items():
        step = statistics.median(x["step_ms"] for x in rs)
        lines.append(f"| {name} | {statistics.median(x['compile_s'] for x in rs):.1f} | "
                     f"{step:.0f} | {statistics.median(x['tokens_per_sec'] for x in rs):,.0f} | "
                     f"{step / base:.2f}x |")
    table = "\n".join(lines)
    notes = (f"Quickstart config ({results['1 device'][0]['params']:,} params), {args.steps} "
             f"steps per run, median of {args.rounds} alternating rounds; {meter.line()}.")
    print(table + "\n\n" + notes)
    if args.append:
        import _common

        _common.append_results("quickstart on meshes of fake CPU devices (bench_mesh)",
                               f"{notes}\n\n{table}", meter=meter)


if __name__ == "__main__":
    main()
