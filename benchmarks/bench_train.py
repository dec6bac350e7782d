"""Training throughput of jaxlm models: tokens/s, median step time, MFU, compile time and peak
memory over model sizes x sequence lengths x families, on the devices JAX sees.

    python benchmarks/bench_train.py                          # CPU preset: tiny/small, seq 128/256
    python benchmarks/bench_train.py --sizes tiny --seq-lens 256 --families transformer --steps 5
    python benchmarks/bench_train.py --preset gpu --dtype bfloat16 --append   # GPT-2 124M..1.3B
    python benchmarks/bench_train.py --sizes tiny --seq-lens 256 --families transformer \
        --rounds 4 --compare-xla-flags=--xla_cpu_experimental_ynn_fusion_type=   # flags A/B

Each configuration runs in its own process (so peak memory is its own), built as the training
loop builds it (`_common.build`: mesh over all devices, sharded state, donated jitted step),
on random token batches. Compile time = `train_step.lower(...).compile()`. After 2 warm-up
steps, `--steps` steps are timed one by one (each waits for its loss); the median counts.
MFU uses jaxlm.flops: PaLM model FLOPs per token over `system_peak` (a data-sheet peak on
accelerators, a measured float32 matmul roof on CPU). Peak memory: the device's
peak_bytes_in_use on accelerators, the process's max RSS on CPU. `--rounds N` repeats the
list N times (configurations alternate) and reports each one's median round;
`--compare-xla-flags FLAGS` adds a copy of every configuration run with FLAGS in XLA_FLAGS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES: dict[str, dict[str, int]] = {  # d_model, n_layers, n_heads
    "tiny": {"d_model": 128, "n_layers": 4, "n_heads": 4},  # the quickstart
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 8},
    "medium": {"d_model": 384, "n_layers": 6, "n_heads": 6},
    "gpt2-124m": {"d_model": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-350m": {"d_model": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-774m": {"d_model": 1280, "n_layers": 36, "n_heads": 20},
    "1.3b": {"d_model": 2048, "n_layers": 24, "n_heads": 16},
}
# preset: ((size, seq_len) runs, vocab size, batch size, dtype)
PRESETS: dict[str, tuple[list[tuple[str, int]], int, int, str]] = {
    "cpu": ([(s, t) for s in ("tiny", "small") for t in (128, 256)], 259, 16, "float32"),
    "gpu": ([("gpt2-124m", 1024), ("gpt2-350m", 1024), ("gpt2-774m", 1024), ("1.3b", 2048)],
            50304, 8, "bfloat16"),
}


def config_overrides(spec: dict) -> list[str]:
    """The train.py-style overrides of one configuration (a `measure` spec)."""
    return [f"model.family={spec['family']}", f"model.vocab_size={spec['vocab']}",
            f"model.max_seq_len={spec['seq_len']}", f"data.seq_len={spec['seq_len']}",
            f"train.batch_size={spec['batch']}", f"train.steps={spec['steps'] + 10}",
            "optim.warmup_steps=2", f"model.dtype={spec['dtype']}",
            f"model.remat={spec['remat']}",
            f"model.attention_impl={spec.get('attention_impl', 'auto')}",
            f"model.scan_layers={str(spec.get('scan_layers', False)).lower()}",
            *(f"model.{k}={v}" for k, v in spec.get("dims", SIZES[spec["size"]]).items())]


def measure(spec: dict) -> dict:
    """Builds and times one configuration in this process; returns its row."""
    import jax
    import numpy as np

    import _common
    from jaxlm import config as config_lib, flops

    cfg = config_lib.load_config(None, config_overrides(spec))
    setup = _common.build(cfg)
    b, t = cfg.train.batch_size, cfg.data.seq_len
    rng = np.random.default_rng(0)
    batches = [jax.device_put({"inputs": rng.integers(0, spec["vocab"], (b, t), dtype=np.int32),
                               "targets": rng.integers(0, spec["vocab"], (b, t), dtype=np.int32),
                               "mask": np.ones((b, t), bool)}, setup.batch_sharding)
               for _ in range(2)]
    state = setup.state
    t0 = time.perf_counter()
    step = setup.train_step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(spec["steps"] + 2):
        t0 = time.perf_counter()
        state, metrics = step(state, batches[i % 2])
        float(metrics["loss"])  # waits for the step
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[2:])
    total, non_embed = flops.param_counts(state.params)
    fpt = flops.model_flops_per_token(cfg.model, non_embed, t)
    if spec.get("roof"):  # CPU: the roof the first configuration measured, for all rows
        peak, peak_src = spec["roof"]
    else:
        peak, peak_src = flops.system_peak(jax.devices(), cfg.model.dtype)
    tok_s = b * t / step_s
    mem, mem_src = _common.peak_memory()
    return {**spec, "params": total, "attention": _common.attention_impl(cfg),
            "compile_s": compile_s, "step_ms": 1e3 * step_s, "tokens_per_sec": tok_s,
            "mfu": flops.mfu(tok_s, fpt, peak), "peak_flops": peak, "peak_source": peak_src,
            "memory_gib": mem / 2**30, "memory_source": mem_src, "loss": float(metrics["loss"])}


def median_row(rounds: list[dict]) -> dict:
    """One configuration's rounds -> its row: the round with the median step time (an error
    when every round failed), with every round's step time in `rounds_ms`."""
    ok = sorted((r for r in rounds if "error" not in r), key=lambda r: r["step_ms"])
    if not ok:
        return rounds[-1]
    return {**ok[(len(ok) - 1) // 2],
            "rounds_ms": [r["step_ms"] for r in rounds if "error" not in r]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--sizes", help=f"comma-separated, from {', '.join(SIZES)} (default: preset)")
    ap.add_argument("--seq-lens", help="comma-separated (default: preset)")
    ap.add_argument("--families", default="transformer,lstm")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    ap.add_argument("--batch-size", type=int, help="sequences per step (default: preset)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"),
                    help="compute dtype (default: preset)")
    ap.add_argument("--vocab-size", type=int, help="default: preset (259 bytes / 50304 GPT-2)")
    ap.add_argument("--remat", default="none", choices=("none", "full", "dots_saveable"))
    ap.add_argument("--rounds", type=int, default=1, help="repeat every configuration, alternating")
    ap.add_argument("--compare-xla-flags", metavar="FLAGS",
                    help="also run every configuration with these XLA_FLAGS added (A/B)")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one JSON spec
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(json.loads(args.one))))
        return
    runs, vocab, batch, dtype = PRESETS[args.preset]
    if args.sizes or args.seq_lens:
        sizes = (args.sizes.split(",") if args.sizes
                 else sorted({s for s, _ in runs}, key=list(SIZES).index))
        seqs = ([int(x) for x in args.seq_lens.split(",")] if args.seq_lens
                else sorted({t for _, t in runs}))
        runs = [(s, t) for s in sizes for t in seqs]
    variants = [""] + ([args.compare_xla_flags] if args.compare_xla_flags else [])
    specs = [{"family": family, "size": size, "seq_len": seq_len, "steps": args.steps,
              "batch": args.batch_size or batch, "dtype": args.dtype or dtype,
              "vocab": args.vocab_size or vocab, "remat": args.remat, "xla_flags": flags}
             for family in args.families.split(",") for size, seq_len in runs
             for flags in variants]
    results: list[list[dict]] = [[] for _ in specs]
    from load import LoadMeter

    meter = LoadMeter()
    roof = None  # a measured CPU matmul roof, measured once (it varies with machine load)
    for _ in range(args.rounds):  # rounds alternate the configurations (and flag variants)
        for spec, got in zip(specs, results):
            env = dict(os.environ)
            if spec["family"] != "transformer":  # as jaxlm.train runs it (jaxlm/xla_flags.py)
                env.setdefault("JAXLM_CPU_DEVICES", "1")
            if spec["xla_flags"]:
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {spec['xla_flags']}".strip()
            with meter.timed():
                proc = subprocess.run([sys.executable, __file__, "--one",
                                       json.dumps({**spec, "roof": roof})],
                                      capture_output=True, text=True, env=env)
            out = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not out:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{spec}: failed: {err}", file=sys.stderr)
                got.append({**spec, "error": err[:120]})
                continue
            got.append(json.loads(out[0][len("RESULT "):]))
            if got[-1]["peak_source"].startswith("measured"):
                roof = (got[-1]["peak_flops"], got[-1]["peak_source"])
            print(json.dumps(got[-1]), file=sys.stderr, flush=True)
    rows = [median_row(got) for got in results]
    flags_col = bool(args.compare_xla_flags)
    lines = ["| family | size | params | seq | batch | dtype | attention | "
             + ("XLA flags | " if flags_col else "") + "compile (s) | "
             "step (ms, median) | tokens/s | MFU | peak memory (GiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if flags_col else "")]
    for r in rows:
        head = f"| {r['family']} | {r['size']} | "
        if "error" in r:
            lines.append(head + f"- | {r['seq_len']} | {r['batch']} | {r['dtype']} | "
                         f"failed: {r['error']} | | | | | |")
            continue
        lines.append(head + f"{r['params'] / 1e6:.2f}M | {r['seq_len']} | {r['batch']} | "
                     f"{r['dtype']} | {r['attention']} | "
                     + (f"{r['xla_flags'] or 'default'} | " if flags_col else "")
                     + f"{r['compile_s']:.1f} | "
                     f"{r['step_ms']:.0f} | {r['tokens_per_sec']:,.0f} | {100 * r['mfu']:.1f}% | "
                     f"{r['memory_gib']:.2f} |")
    ok = [r for r in rows if "error" not in r]
    notes = ""
    if ok:
        notes = (f"MFU denominator: {ok[0]['peak_flops'] / 1e12:.3g} TFLOP/s "
                 f"({ok[0]['peak_source']}); peak memory: {ok[0]['memory_source']}; "
                 f"{args.steps} timed steps per row after 2 warm-up steps, random tokens.")
        if args.rounds > 1:
            per_round = "; ".join(
                f"{r['family']} {r['size']}/{r['seq_len']}/{r['xla_flags'] or 'default'}: "
                + ", ".join(f"{x:.0f}" for x in r["rounds_ms"]) for r in ok)
            notes += (f" Rows: the median of {args.rounds} alternating rounds; step ms per "
                      f"round: {per_round}.")
    table = "\n".join(lines)
    notes += f" During the runs, {meter.line()}."
    print(table + "\n\n" + notes)
    if args.append:
        import _common

        _common.append_results(f"training throughput (bench_train, preset {args.preset})",
                               f"{notes}\n\n{table}", meter=meter)


if __name__ == "__main__":
    main()
