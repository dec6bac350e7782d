"""Causal self-attention forward + backward on CPU: `jax.nn.dot_product_attention`'s XLA
implementation (what jaxlm's Attention runs on CPU) against `jaxlm.models.block_attention`
(block-causal: skips the key blocks above the diagonal) and PyTorch's
`scaled_dot_product_attention`.

    python benchmarks/bench_attention.py --append                  # quickstart shapes
    python benchmarks/bench_attention.py --batch 4 --seq 1024 --append
    python benchmarks/bench_attention.py --train-step --append    # the quickstart train step
    python benchmarks/bench_attention.py --train-step --append model.max_seq_len=1024 \
        data.seq_len=1024 train.batch_size=4

Inputs (b, t, n, h) float32; the loss is sum(out ** 2); timed: value and gradients w.r.t. q, k,
v. Rounds alternate the implementations; medians count. Gradients are checked against
dot_product_attention's (largest error relative to the largest gradient).

--train-step: the whole jaxlm train step (as `_common.build` builds it; config overrides as for
train.py) with model.attention_impl=xla and =blockwise (block_causal_attention), alternating
rounds on the same random batches, with the losses of both compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.block_attention import block_causal_attention


def train_step_ab(overrides: list[str], rounds: int, steps: int, meter) -> str:
    """The train step with XLA vs blockwise attention; a Markdown report."""
    import _common
    from jaxlm import config as config_lib

    cfg = _common.byte_config(overrides)
    b, t = cfg.train.batch_size, cfg.data.seq_len
    setups = {impl: _common.build(config_lib.replace(cfg, **{"model.attention_impl": impl}))
              for impl in ("xla", "blockwise")}
    times, losses = _common.alternate_steps(setups, _common.random_batches(cfg, 256), rounds,
                                            steps, meter)
    (a, ta), (bname, tb) = times.items()
    med_a, med_b = statistics.median(ta), statistics.median(tb)
    diff = max(abs(x - y) for x, y in zip(*losses.values()))
    m = cfg.model
    return (f"jaxlm train step, d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, "
            f"batch {b} x {t}, {_common.compute_dtype(cfg)}; median of {rounds} alternating "
            f"rounds x {steps} steps; {meter.line()}. Largest |loss difference| over {len(ta) * steps} steps: "
            f"{diff:.1e}.\n\n| model.attention_impl | step (ms) | per round (ms) | "
            f"step time ratio |\n"
            f"|---|---|---|---|\n"
            f"| {a} | {1e3 * med_a:.0f} | {', '.join(f'{1e3 * x:.0f}' for x in ta)} | 1.00x |\n"
            f"| {bname} | {1e3 * med_b:.0f} | {', '.join(f'{1e3 * x:.0f}' for x in tb)} | "
            f"{med_b / med_a:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--block-sizes", default="64,128,256", help="for the block-causal version")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--train-step", action="store_true", help="time the whole train step")
    ap.add_argument("--steps", type=int, default=3, help="--train-step: steps per round")
    ap.add_argument("overrides", nargs="*", help="--train-step: config overrides")
    args = ap.parse_args()
    from load import LoadMeter

    meter = LoadMeter()
    if args.train_step:
        report = train_step_ab(args.overrides, args.rounds, args.steps, meter)
        print(report)
        if args.append:
            import _common

            _common.append_results("train step with block-causal attention (bench_attention)",
                                   report, meter=meter)
        return

    shape = (args.batch, args.seq, args.heads, args.head_dim)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))

    def fwd_bwd(attn: Callable) -> Callable:
        return jax.jit(jax.value_and_grad(lambda *qkv: (attn(*qkv) ** 2).sum(), argnums=(0, 1, 2)))

    impls = {"jax.nn.dot_product_attention (xla)": fwd_bwd(
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                     implementation="xla"))}
    for size in sorted({min(int(x), args.seq) for x in args.block_sizes.split(",")}):
        impls[f"block-causal, block_size {size}"] = fwd_bwd(
            lambda q, k, v, size=size: block_causal_attention(q, k, v, block_size=size))
    ref = jax.tree.leaves(impls["jax.nn.dot_product_attention (xla)"](q, k, v)[1])
    errors = {}
    for name, fn in impls.items():
        grads = jax.tree.leaves(fn(q, k, v)[1])
        errors[name] = max(float(jnp.abs(a - b).max() / jnp.abs(b).max())
                           for a, b in zip(grads, ref))
    runs: dict[str, Callable[[], object]] = {
        name: (lambda fn=fn: jax.block_until_ready(fn(q, k, v))) for name, fn in impls.items()}
    if not args.no_torch:
        import os

        import torch

        torch.set_num_threads(os.cpu_count())
        tq, tk, tv = (torch.from_numpy(np.array(x)).transpose(1, 2).contiguous().requires_grad_()
                      for x in (q, k, v))

        def torch_run() -> None:
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            (out ** 2).sum().backward()

        runs[f"torch scaled_dot_product_attention ({torch.get_num_threads()} threads)"] = torch_run
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            with meter.timed():
                run()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["jax.nn.dot_product_attention (xla)"])
    lines = ["| implementation | fwd+bwd (ms, median) | vs dot_product_attention | "
             "max rel. grad error |",
             "|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        err = f"{errors[name]:.1e}" if name in errors else "-"
        lines.append(f"| {name} | {1e3 * med:.1f} | {med / base:.2f}x | {err} |")
    summary = (f"q, k, v (b, t, n, h) = {shape} float32, causal; median of {args.rounds} "
               f"alternating rounds; {meter.line()}.")
    table = "\n".join(lines)
    print(table + "\n\n" + summary)
    if args.append:
        import _common

        _common.append_results("causal attention fwd+bwd on CPU (bench_attention)",
                               f"{summary}\n\n{table}", "torch", meter=meter)


if __name__ == "__main__":
    main()
