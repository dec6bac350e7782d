"""jaxlm vs PyTorch training throughput on CPU, the same GPT from the same weights on the same data.

    python benchmarks/bench_vs_torch.py --rounds 3 --steps 10 --append
    python benchmarks/bench_vs_torch.py model.n_layers=6 data.seq_len=128   # other shapes
    python benchmarks/bench_vs_torch.py model.attention_impl=xla            # jaxlm's attention

The model is jaxlm's quickstart Transformer (config overrides as for train.py); the PyTorch twin
(`torch_gpt.TorchGPT`) is loaded with jaxlm's initial params, and both train with the same AdamW,
clipping and schedule on the same packed byte-level batches of the stdlib corpus. After one
untimed warm-up step each (jaxlm compiles), rounds alternate: K jaxlm steps, then K PyTorch
steps (the order flips each round), so machine noise falls on both. Tokens/s = tokens / wall
time of the round, data placement included; the median round counts. Losses are compared step
by step. PyTorch gets torch.set_num_threads(os.cpu_count()), the cores XLA's CPU client uses.
Default XLA flags (no --xla_backend_optimization_level=0, unlike the test suite).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
import torch

import _common
from load import LoadMeter
from torch_gpt import TorchGPT, TorchTrainer

from jaxlm import config as config_lib
from jaxlm.data import pipeline
from jaxlm.data.corpora import load_corpus
from jaxlm.data.tokenizers import ByteTokenizer


def batches(cfg: config_lib.RunConfig, n: int) -> list[dict[str, np.ndarray]]:
    """The first n training batches of the run's pipeline (stdlib corpus, byte tokens)."""
    d = cfg.data
    corpus = load_corpus(d.corpus, validation_fraction=d.validation_fraction)
    it = pipeline.train_iterator(corpus.train, ByteTokenizer(), seq_len=d.seq_len,
                                 global_batch=cfg.train.batch_size, seed=d.seed,
                                 shuffle_window=d.shuffle_window)
    return [next(it) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="steps per side per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="config overrides (default: the quickstart)")
    args = ap.parse_args()

    total = 1 + args.rounds * args.steps
    cfg = config_lib.load_config(None, [f"train.steps={total}", f"optim.warmup_steps={total // 4}",
                                        *args.overrides])
    cfg = config_lib.replace(cfg, **{"model.vocab_size": ByteTokenizer().vocab_size})
    data = batches(cfg, total)
    setup = _common.build(cfg)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmodel = TorchGPT(cfg.model)
    tmodel.load_jax_params(jax.device_get(setup.state.params))  # before the state is donated
    trainer = TorchTrainer(tmodel, cfg.optim, setup.lr_schedule, total)

    state = setup.state
    jax_losses: list[float] = []
    torch_losses: list[float] = []

    def run_jax(lo: int, hi: int) -> float:
        nonlocal state
        t0 = time.perf_counter()
        metrics = []
        for i in range(lo, hi):
            batch = jax.device_put(data[i], setup.batch_sharding)
            state, m = setup.train_step(state, batch)
            metrics.append(m["loss"])
        jax_losses.extend(float(x) for x in jax.device_get(metrics))  # waits for the last step
        return time.perf_counter() - t0

    def run_torch(lo: int, hi: int) -> float:
        t0 = time.perf_counter()
        losses = []
        for i in range(lo, hi):
            b = data[i]
            losses.append(trainer.step(torch.from_numpy(b["inputs"]).long(),
                                       torch.from_numpy(b["targets"]).long()))
        torch_losses.extend(float(x) for x in losses)
        return time.perf_counter() - t0

    t_compile = run_jax(0, 1)  # traces and compiles the step
    t_torch_first = run_torch(0, 1)
    tokens = args.steps * cfg.train.batch_size * cfg.data.seq_len
    rates: dict[str, list[float]] = {"jaxlm": [], "torch": []}
    meter = LoadMeter()
    for r in range(args.rounds):
        lo, hi = 1 + r * args.steps, 1 + (r + 1) * args.steps
        order = [("jaxlm", run_jax), ("torch", run_torch)][:: 1 if r % 2 == 0 else -1]
        for name, fn in order:
            with meter.timed():
                seconds = fn(lo, hi)
            rates[name].append(tokens / seconds)
        print(f"round {r + 1}: jaxlm {rates['jaxlm'][-1]:,.0f} tok/s, "
              f"torch {rates['torch'][-1]:,.0f} tok/s", flush=True)

    jr, tr = statistics.median(rates["jaxlm"]), statistics.median(rates["torch"])
    diffs = np.abs(np.array(jax_losses) - np.array(torch_losses))
    n_params = sum(p.numel() for p in tmodel.parameters())
    m = cfg.model
    table = "\n".join([
        "| | jaxlm | PyTorch |", "|---|---|---|",
        f"| tokens/s (median of {args.rounds} rounds x {args.steps} steps) | {jr:,.0f} | "
        f"{tr:,.0f} |",
        f"| tokens/s per round | {', '.join(f'{x:,.0f}' for x in rates['jaxlm'])} | "
        f"{', '.join(f'{x:,.0f}' for x in rates['torch'])} |",
        f"| first step (s; jaxlm: trace + compile) | {t_compile:.2f} | {t_torch_first:.2f} |",
        f"| loss at step 1 | {jax_losses[0]:.4f} | {torch_losses[0]:.4f} |",
        f"| loss at step {total} | {jax_losses[-1]:.4f} | {torch_losses[-1]:.4f} |",
        f"| **jaxlm / PyTorch tokens/s** | **{jr / tr:.2f}x** | |",
    ])
    summary = (f"Model: d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, vocab "
               f"{m.vocab_size} ({n_params:,} params), batch {cfg.train.batch_size} x "
               f"{cfg.data.seq_len}, {_common.compute_dtype(cfg)}, attention "
               f"{_common.attention_impl(cfg)}; same initial "
               f"weights and batches. Largest |loss difference| over the {total} steps: "
               f"{diffs.max():.2e} (at step {int(diffs.argmax()) + 1}). torch threads: "
               f"{torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()}); {meter.line()}.")
    print(table + "\n\n" + summary)
    if args.append:
        _common.append_results("jaxlm vs PyTorch training throughput (CPU)",
                               f"{summary}\n\n{table}", "torch", meter=meter)


if __name__ == "__main__":
    main()
