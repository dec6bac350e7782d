"""μP learning-rate transfer on CPU: an LR grid x widths (base, 4x, 8x) x {standard, μP}.

Trains jaxlm's Transformer (bytes of the Python standard library as text; every run sees the
same batches) for each peak learning rate of a grid, at each width, in the standard
parametrization and under μP (`model.mup_base_width` = the smallest width), and prints the
held-out loss per LR per width and where each width's best LR lies. With μP the best LR at the
base width should stay within one grid step of the best at 4x and 8x; with the standard
parametrization it moves to smaller rates as the model widens.

All LRs of one (width, parametrization) train at once: one compiled program, vmapped over the
learning rate (the optimizer is built with lr 1 and its updates scaled per LR: the same
update as `optim.lr=LR`, weight decay included).

    python benchmarks/mup_transfer.py [--widths 32,128,256] [--lrs 2e-3,...] [--steps 150]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from load import LoadMeter  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxlm.config import ModelConfig, OptimConfig  # noqa: E402
from jaxlm.data.corpora import stdlib_corpus  # noqa: E402
from jaxlm.models import build_model  # noqa: E402
from jaxlm.train.optim import build_optimizer  # noqa: E402
from jaxlm.train.param_groups import lr_multipliers  # noqa: E402
from jaxlm.train.step import loss_and_grads  # noqa: E402

VOCAB = 256  # raw bytes


def byte_stream(texts, n_bytes: int) -> np.ndarray:
    out, total = [], 0
    for text in texts:
        b = text.encode("utf-8")
        out.append(np.frombuffer(b, np.uint8))
        total += len(b)
        if total >= n_bytes:
            break
    return np.concatenate(out)[:n_bytes].astype(np.int32)


def windows(stream: np.ndarray, n: int, batch: int, seq: int, seed: int) -> np.ndarray:
    """(n, batch, seq + 1) random windows of the stream."""
    starts = np.random.default_rng(seed).integers(0, len(stream) - seq - 1, (n, batch))
    return stream[starts[..., None] + np.arange(seq + 1)]


def train_grid(width: int, base, lrs: np.ndarray, train_rows: np.ndarray,
               eval_rows: np.ndarray, a: argparse.Namespace) -> np.ndarray:
    """Held-out loss (nats/byte) after `a.steps` steps for each peak LR; NaN where it diverged."""
    cfg = ModelConfig(vocab_size=VOCAB, d_model=width, n_layers=a.layers, n_heads=a.heads,
                      max_seq_len=a.seq, mup_base_width=base, attention_impl="xla",
                      dtype="float32")
    model = build_model(cfg)
    opt = build_optimizer(OptimConfig(lr=1.0, warmup_steps=a.steps // 10), a.steps,
                          group_lr=lr_multipliers(cfg))

    def as_batch(rows):
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:],
                "mask": jnp.ones(rows[:, 1:].shape, bool)}

    def run(lr, key):
        params = nn.unbox(model.init(key, train_rows[0, :, :-1]))["params"]

        def step(carry, rows):
            p, s = carry
            _, g, _ = loss_and_grads(p, as_batch(rows), key, model=model)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, jax.tree.map(lambda x: lr * x, u)), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), train_rows)
        losses = jax.lax.map(lambda r: loss_and_grads(params, as_batch(r), key, model=model)[0],
                             eval_rows)
        return losses.mean()

    key = jax.random.PRNGKey(a.seed)
    out = jax.jit(jax.vmap(run, in_axes=(0, None)))(jnp.asarray(lrs, jnp.float32), key)
    out = np.asarray(out, np.float64)
    return np.where(np.isfinite(out), out, np.nan)


def best_index(losses: np.ndarray) -> int:
    return int(np.nanargmin(np.where(np.isnan(losses), np.inf, losses)))


def table(results: dict, lrs: np.ndarray, widths: list[int]) -> str:
    lines = []
    for mode in ("standard", "μP"):
        lines += [f"\n{mode} (held-out loss, nats/byte; * = best LR of the width)\n",
                  "| LR | " + " | ".join(f"d={w}" for w in widths) + " |",
                  "|---:|" + "---:|" * len(widths)]
        best = {w: best_index(results[mode][w]) for w in widths}
        for i, lr in enumerate(lrs):
            cells = []
            for w in widths:
                v = results[mode][w][i]
                cells.append("diverged" if math.isnan(v) else
                             f"{v:.4f}{'*' if best[w] == i else ''}")
            lines.append(f"| {lr:.2e} | " + " | ".join(cells) + " |")
        shifts = [best[w] - best[widths[0]] for w in widths[1:]]
        lines.append(f"\nbest LR: " + ", ".join(f"d={w}: {lrs[best[w]]:.2e}" for w in widths)
                     + f"; shift from d={widths[0]} in grid steps: {shifts}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="32,128,256", help="d_model values; the first is the base")
    p.add_argument("--lrs", default=",".join(f"{2.0 ** k:.6g}" for k in range(-12, -3)),
                   help="peak learning rates (default 2^-12 .. 2^-4, factor 2 apart)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    widths = [int(w) for w in a.widths.split(",")]
    lrs = np.array(sorted(float(x) for x in a.lrs.split(",")))
    corpus = stdlib_corpus(0.05)
    train_rows = windows(byte_stream(corpus.train, 4_000_000), a.steps, a.batch, a.seq, a.seed)
    eval_rows = windows(byte_stream(corpus.eval, 1_000_000), a.eval_batches, a.batch, a.seq, 1)
    meter, t0 = LoadMeter(), time.time()
    results: dict = {"standard": {}, "μP": {}}
    for w in widths:
        for mode, base in (("standard", None), ("μP", widths[0])):
            t = time.time()
            with meter.timed():
                results[mode][w] = train_grid(w, base, lrs, train_rows, eval_rows, a)
            print(f"{mode:8s} d={w:4d}: {time.time() - t:6.1f}s  "
                  + " ".join(f"{v:.3f}" for v in results[mode][w]), flush=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    others = sum(meter.others_cores) / max(len(meter.others_cores), 1)
    print(f"\n{when}; {time.time() - t0:.0f}s wall on {os.cpu_count()} CPU cores; other "
          f"processes kept {others:.1f} cores busy on average (shared machine); "
          f"jax {jax.__version__}")
    print(f"config: {a.layers} layers, {a.heads} heads, seq {a.seq}, batch {a.batch}, "
          f"{a.steps} steps (AdamW, warmup {a.steps // 10}, cosine to 0.1), bytes of the "
          f"stdlib; μP base width {widths[0]}")
    print(table(results, lrs, widths))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({
            "lrs": lrs.tolist(), "widths": widths, "args": vars(a), "when": when,
            "losses": {m: {str(w): [None if math.isnan(v) else v for v in r.tolist()]
                           for w, r in res.items()} for m, res in results.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
