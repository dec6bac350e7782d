"""Causal self-attention forward + backward on CPU: `jax.nn.dot_product_attention`'s XLA
implementation (what jaxlm's Attention runs on CPU) against a block-causal formulation in plain
jax.numpy that skips the key blocks above the diagonal, and PyTorch's `scaled_dot_product_attention`.

    python benchmarks/bench_attention.py --append                  # quickstart shapes
    python benchmarks/bench_attention.py --batch 4 --seq 1024 --heads 4 --head-dim 32

Inputs (b, t, n, h) float32; the loss is sum(out ** 2); timed: value and gradients w.r.t. q, k,
v. Rounds alternate the implementations; medians count. The block-causal version splits the
queries into `blocks` row blocks, each attending only to the keys up to its own end, so it
does (blocks + 1) / (2 * blocks) of the full score matmuls; its gradients are checked against
dot_product_attention's (largest error relative to the largest gradient).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def block_causal_attention(q_btnh: jax.Array, k_btnh: jax.Array, v_btnh: jax.Array,
                           blocks: int) -> jax.Array:
    """Causal softmax attention, computed per block of `t / blocks` queries over only the keys
    up to the block's end (float32 softmax, 1/sqrt(h) scale, as dot_product_attention)."""
    t, h = q_btnh.shape[1], q_btnh.shape[3]
    size = t // blocks
    causal_ss = jnp.tril(jnp.ones((size, size), bool))
    outs = []
    for i in range(blocks):
        q = q_btnh[:, i * size:(i + 1) * size]
        k, v = k_btnh[:, :(i + 1) * size], v_btnh[:, :(i + 1) * size]
        s_bnqk = jnp.einsum("bqnh,bknh->bnqk", q, k).astype(jnp.float32) / np.sqrt(h)
        mask_qk = jnp.concatenate([jnp.ones((size, i * size), bool), causal_ss], axis=1)
        p_bnqk = jax.nn.softmax(jnp.where(mask_qk, s_bnqk, jnp.finfo(jnp.float32).min), axis=-1)
        outs.append(jnp.einsum("bnqk,bknh->bqnh", p_bnqk.astype(q.dtype), v))
    return jnp.concatenate(outs, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--blocks", default="1,2,4", help="block counts for the block-causal version")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    shape = (args.batch, args.seq, args.heads, args.head_dim)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))

    def fwd_bwd(attn: Callable) -> Callable:
        return jax.jit(jax.value_and_grad(lambda *qkv: (attn(*qkv) ** 2).sum(), argnums=(0, 1, 2)))

    impls = {"jax.nn.dot_product_attention (xla)": fwd_bwd(
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla"))}
    for nb in (int(x) for x in args.blocks.split(",")):
        impls[f"block-causal, {nb} blocks"] = fwd_bwd(
            lambda q, k, v, nb=nb: block_causal_attention(q, k, v, nb))
    ref = jax.tree.leaves(impls["jax.nn.dot_product_attention (xla)"](q, k, v)[1])
    errors = {}
    for name, fn in impls.items():
        grads = jax.tree.leaves(fn(q, k, v)[1])
        errors[name] = max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in zip(grads, ref))
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
            run()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["jax.nn.dot_product_attention (xla)"])
    lines = ["| implementation | fwd+bwd (ms, median) | vs dot_product_attention | max rel. grad error |",
             "|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        err = f"{errors[name]:.1e}" if name in errors else "-"
        lines.append(f"| {name} | {1e3 * med:.1f} | {med / base:.2f}x | {err} |")
    summary = (f"q, k, v (b, t, n, h) = {shape} float32, causal; median of {args.rounds} "
               f"alternating rounds.")
    table = "\n".join(lines)
    print(table + "\n\n" + summary)
    if args.append:
        import _common

        _common.append_results("causal attention fwd+bwd on CPU (bench_attention)",
                               f"{summary}\n\n{table}", "torch")


if __name__ == "__main__":
    main()
