"""Decode throughput: jaxlm's compiled KV-cache loop against transformers' `generate`, side by
side in one process, on a GPT-2-small-shaped model (random weights, the same in both).

    python benchmarks/bench_generate.py                     # batch 1 and 8, 128 new tokens
    python benchmarks/bench_generate.py --batch 1 --new 64 --layers 2   # a quicker look

Greedy decoding from a 16-token prompt, a fixed number of new tokens (no EOS stop). Each side
is warmed up once (jaxlm: compiles; transformers: first-call overheads) and then timed over
--repeats runs; the best run counts. Tokens/s = batch * new tokens / seconds, prefill included.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import jax
    import torch
    import transformers

    from jaxlm.generate import generate
    from jaxlm.interop import load_hf_gpt2
    from jaxlm.models import build_model

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers)).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        cfg, params = load_hf_gpt2(d)
    model = build_model(cfg)
    params = jax.device_put(params)
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
        for name, fn in (("jaxlm", run_jaxlm), ("transformers", run_hf)):
            fn()  # warm up / compile
            best = min(_timed(fn) for _ in range(args.repeats))
            row[f"{name}_tokens_per_sec"] = round(b * args.new / best, 1)
        row["ratio"] = round(row["jaxlm_tokens_per_sec"] / row["transformers_tokens_per_sec"], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); transformers {transformers.__version__}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
