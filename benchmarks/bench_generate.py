"""Decode throughput: jaxlm's compiled KV-cache loop against transformers' `generate`, side by
side in one process, on a GPT-2-small-shaped model (random weights, the same in both).

    python benchmarks/bench_generate.py                     # batch 1 and 8, 128 new tokens
    python benchmarks/bench_generate.py --batch 1 --new 64 --layers 2   # a quicker look
    python benchmarks/bench_generate.py --layers 6 --width 512 --heads 8 --vocab 32000  # another shape

Greedy decoding from a 16-token prompt, a fixed number of new tokens (no EOS stop). Each side
is warmed up once (jaxlm: compiles; transformers: first-call overheads); then --rounds rounds
alternate the two (the order flips each round) and the median round counts, with the spread
(min-max) beside it. Tokens/s = batch * new tokens / seconds, prefill included. Every timed run
records the CPU other processes used meanwhile (benchmarks/load.py); --append refuses to write
to RESULTS.md unless the machine was quiet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768, help="n_embd (GPT-2 small: 768)")
    ap.add_argument("--heads", type=int, default=12, help="n_head (GPT-2 small: 12)")
    ap.add_argument("--vocab", type=int, default=50257, help="vocab_size (GPT-2: 50257)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    import jax
    import torch
    import transformers

    from jaxlm.generate import generate
    from jaxlm.interop import load_hf_gpt2
    from jaxlm.models import build_model

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=args.layers, n_embd=args.width, n_head=args.heads, vocab_size=args.vocab)).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        cfg, params = load_hf_gpt2(d)
    model = build_model(cfg)
    params = jax.device_put(params)
    from load import LoadMeter

    meter = LoadMeter()
    results = []
    for b in args.batch:
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (b, args.prompt))

        def run_jaxlm():
            generate(model, params, prompt, max_new_tokens=args.new, temperature=0.0)

        def run_hf():
            with torch.no_grad():
                hf.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(
                    torch.from_numpy(prompt)), do_sample=False, max_new_tokens=args.new,
                    min_new_tokens=args.new, pad_token_id=0)

        row = {"batch": b, "new_tokens": args.new, "prompt": args.prompt, "layers": args.layers}
        sides = [("jaxlm", run_jaxlm), ("transformers", run_hf)]
        for _, fn in sides:
            fn()  # warm up / compile
        rates: dict[str, list[float]] = {name: [] for name, _ in sides}
        for r in range(args.rounds):
            for name, fn in sides[:: 1 if r % 2 == 0 else -1]:
                with meter.timed():
                    rates[name].append(b * args.new / _timed(fn))
        for name, rs in rates.items():
            row[f"{name}_tokens_per_sec"] = round(statistics.median(rs), 1)
            row[f"{name}_spread"] = [round(min(rs), 1), round(max(rs), 1)]
        row["ratio"] = round(row["jaxlm_tokens_per_sec"] / row["transformers_tokens_per_sec"], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
    lines = ["| batch | new tokens | jaxlm tokens/s (min-max) | transformers tokens/s (min-max) "
             "| jaxlm / transformers |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['batch']} | {r['new_tokens']} | {r['jaxlm_tokens_per_sec']:,.0f} "
                     f"({r['jaxlm_spread'][0]:,.0f}-{r['jaxlm_spread'][1]:,.0f}) | "
                     f"{r['transformers_tokens_per_sec']:,.0f} ({r['transformers_spread'][0]:,.0f}-"
                     f"{r['transformers_spread'][1]:,.0f}) | **{r['ratio']:.2f}x** |")
    shape = ("GPT-2-small shape" if (args.width, args.heads, args.vocab) == (768, 12, 50257)
             else f"GPT-2 layout, {args.width} wide, {args.heads} heads, vocab {args.vocab}")
    notes = (f"{shape} ({args.layers} layers, random weights, the same in both), "
             f"greedy, {args.prompt}-token prompt, prefill included; median of {args.rounds} "
             f"alternating rounds; torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"transformers {transformers.__version__}; {meter.line()}.")
    table = "\n".join(lines)
    print(table + "\n\n" + notes)
    if args.append:
        import _common

        _common.append_results("decode throughput vs transformers (bench_generate)",
                               f"{notes}\n\n{table}", "torch", "transformers", meter=meter)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
