"""The one prepared GPU check: everything worth measuring on a lent H200, in one time-boxed run.

    python3 benchmarks/gpu_suite.py --out DIR                 # on the GPU (about 6-8 minutes)
    python benchmarks/gpu_suite.py --out /tmp/s --cpu-dry-run  # the same parts, tiny shapes, CPU

Parts, in priority order (each in its own process with its own time limit; the run as a whole
stops starting parts when --budget-s is spent, so one slow part cannot eat the run):
  env       GPU, driver, package versions, the attention kernel `auto` resolves to
  roof      bf16 and fp32 matmul rate (8192^3), the practical ceiling beside the data sheet's
  train     tokens/s, step time, MFU, compile time, peak memory: GPT-2 124M/350M/774M at seq
            1024, 1.3B at seq 2048; bf16, cuDNN attention, scanned layers, full remat
  decode    greedy decode tokens/s, jaxlm vs transformers' generate, GPT-2 small, batch 1 and 8
  numerics  loss curves of a small model in bf16 vs fp32 compute from the same init
  loo       350M leave-one-out: XLA attention, no remat, dots_saveable remat, unrolled layers
  train_py  README's main job (`python train.py`, the quickstart) on the GPU

Writes DIR/suite.json (every result) and DIR/table.md (ready for benchmarks/RESULTS.md) after
each part. Needs jaxlm's imports: on the H200 image, the wheels built by
benchmarks/gpu_wheels.sh (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import gpu_report

HERE = pathlib.Path(__file__).resolve().parent

SIZES = {  # name: (dims, seq_len, batch)
    "gpt2-124m": ({"d_model": 768, "n_layers": 12, "n_heads": 12}, 1024, 32),
    "gpt2-350m": ({"d_model": 1024, "n_layers": 24, "n_heads": 16}, 1024, 32),
    "gpt2-774m": ({"d_model": 1280, "n_layers": 36, "n_heads": 20}, 1024, 16),
    "1.3b": ({"d_model": 2048, "n_layers": 24, "n_heads": 16}, 2048, 16),
}
TINY = ({"d_model": 64, "n_layers": 2, "n_heads": 4}, 64, 2)  # every size in a dry run


def plan(dry: bool) -> list[tuple[str, str, dict, int]]:
    """[(label, part, spec, time limit in s)] in the order they run."""
    roof_n = 256 if dry else 8192
    # remat=full + scanned layers: fits every size (1.3B at seq 2048 without remat asked for
    # 126 GiB) and was faster than no remat with scan at 350M (benchmarks/RESULTS.md, 11-30).
    base = {"family": "transformer", "steps": 2 if dry else 10, "dtype": "bfloat16",
            "vocab": 512 if dry else 50304, "remat": "full", "attention_impl": "cudnn",
            "scan_layers": True}
    trains = []
    for size, (dims, seq, batch) in SIZES.items():
        dims, seq, batch = TINY if dry else (dims, seq, batch)
        trains.append((f"train {size}", "train",
                       {**base, "size": size, "dims": dims, "seq_len": seq, "batch": batch},
                       60 if dry else (200 if size == "1.3b" else 130)))
    mid = trains[1][2]  # 350M: leave-one-out around it
    loo = [(f"loo {name}", "train", {**mid, **change, "variant": name}, 60 if dry else 130)
           for name, change in (("xla attention", {"attention_impl": "xla"}),
                                ("remat none", {"remat": "none"}),
                                ("remat dots_saveable", {"remat": "dots_saveable"}),
                                ("unrolled layers", {"scan_layers": False}))]
    d0, seq0, _ = TINY if dry else SIZES["gpt2-124m"]
    gpt2 = ({"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512, "n_positions": 128}
            if dry else {"n_layer": 12})
    return [
        ("env", "env", {"dtype": "bfloat16", "attention_probe": {
            "n_heads": d0["n_heads"], "head_dim": d0["d_model"] // d0["n_heads"],
            "seq_len": seq0}}, 60 if dry else 90),
        ("roof", "roof", {"n": roof_n}, 60),
        *trains,
        ("decode", "decode", {"gpt2": gpt2, "batches": [1, 8], "new": 8 if dry else 128,
                              "prompt": 16, "repeats": 2 if dry else 3, "dtype": "bfloat16"},
         120 if dry else 150),
        ("numerics", "numerics", {"dims": {"d_model": 64, "n_layers": 2, "n_heads": 4} if dry
                                  else {"d_model": 256, "n_layers": 4, "n_heads": 4},
                                  "seq_len": 64 if dry else 256, "batch": 4 if dry else 16,
                                  "steps": 12 if dry else 60, "tolerance": 0.05}, 90),
        *loo,
        ("train.py", "train_py", {"overrides": (
            ["train.steps=20", "optim.warmup_steps=5", "train.eval_every=0", "train.final_eval_batches=2",
             "train.checkpoint_every=0", "train.samples=1", "train.sample_tokens=16"]
            if dry else [])}, 90 if dry else 150),
    ]


def run_part(part: str, spec: dict, limit: float, dry: bool) -> dict:
    """Runs one part in a child process; {status, seconds, result | error}."""
    env = dict(os.environ)
    if dry:
        env["JAX_PLATFORMS"] = "cpu"
    if part == "decode":  # leave room on the GPU for PyTorch beside JAX
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.4")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / "gpu_suite.py"), "--child", part,
                               "--spec", json.dumps(spec)], capture_output=True, text=True,
                              timeout=limit, env=env, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - t0,
                "error": f"over its {limit:.0f} s limit"}
    seconds = time.perf_counter() - t0
    out = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not out:
        tail = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"status": "failed", "seconds": seconds, "error": tail[-1][:300],
                "stderr_tail": tail[-15:]}
    return {"status": "ok", "seconds": seconds, "result": json.loads(out[-1][len("RESULT "):])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output folder (suite.json, table.md)")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="tiny shapes on the CPU: proves every part before GPU time is spent")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="no part starts after this many seconds (default 480; dry run 900)")
    ap.add_argument("--only", help="comma-separated labels or parts to run (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(HERE.parent))
        import gpu_parts

        print("RESULT " + json.dumps(gpu_parts.PARTS[args.child](json.loads(args.spec))),
              flush=True)
        return
    if not args.out:
        ap.error("--out DIR is required")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or (900.0 if args.cpu_dry_run else 480.0)
    steps = plan(args.cpu_dry_run)
    if args.only:
        keep = set(args.only.split(","))
        steps = [s for s in steps if s[0] in keep or s[1] in keep]
    start, records = time.perf_counter(), []
    roof_tflops = None
    for label, part, spec, limit in steps:
        left = budget - (time.perf_counter() - start)
        if part == "train" and roof_tflops:
            spec = {**spec, "roof_tflops": roof_tflops}
        if left < min(30.0, limit):
            rec = {"status": "skipped", "seconds": 0.0, "error": "suite budget spent"}
        else:
            rec = run_part(part, spec, min(limit, left), args.cpu_dry_run)
        if part == "roof" and rec["status"] == "ok":
            roof_tflops = rec["result"]["bfloat16_tflops"]
        records.append({"label": label, "part": part, "spec": spec, **rec})
        print(f"[{time.perf_counter() - start:6.0f} s] {label}: {rec['status']} "
              f"({rec['seconds']:.0f} s){' ' + rec.get('error', '') if 'error' in rec else ''}",
              flush=True)
        if rec["status"] == "ok":
            print("  " + json.dumps(rec["result"])[:600], flush=True)
        (out / "suite.json").write_text(json.dumps(
            {"dry_run": args.cpu_dry_run, "budget_s": budget, "parts": records}, indent=1))
        (out / "table.md").write_text(gpu_report.markdown(records, args.cpu_dry_run))
    print("\n" + (out / "table.md").read_text())
    failed = [r["label"] for r in records if r["status"] != "ok"]
    if failed:
        print(f"parts not ok: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1 if args.cpu_dry_run and failed else 0)


if __name__ == "__main__":
    main()
