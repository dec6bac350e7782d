"""The train step with the Dense layers' 2D matmul (`jaxlm.models.matmul`, jaxlm's CPU default)
against flax's own `dot_general` (autodiff's weight gradients), A/B in one process.

    python benchmarks/bench_dense.py --append                                   # quickstart
    python benchmarks/bench_dense.py --append train.batch_size=12 data.seq_len=64 \\
        model.max_seq_len=64 model.use_bias=false                               # nanoGPT's CPU config

Built as the training loop builds it (`_common.build`; on a CPU-only machine one single-threaded
device per core, as `jaxlm train` gives a Transformer), random token batches, the two step
functions alternating within each round, each step waiting for its loss; medians count.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Callable, Iterator

import _common
from load import LoadMeter
from jaxlm.models import layers, transformer


@contextlib.contextmanager
def flax_dot_general() -> Iterator[None]:
    """While open, the model's Dense layers trace with flax's default dot_general."""
    saved = layers.dense_dot_general, transformer.dense_dot_general
    layers.dense_dot_general = transformer.dense_dot_general = lambda: None
    try:
        yield
    finally:
        layers.dense_dot_general, transformer.dense_dot_general = saved


def _traced_with_flax_dot(step: Callable) -> Callable:
    def call(state, batch):  # jit traces on the first call only; later calls hit its cache
        with flax_dot_general():
            return step(state, batch)
    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="config overrides (default: the quickstart)")
    args = ap.parse_args()

    cfg = _common.byte_config(args.overrides)
    before = _common.build(cfg)
    before = before._replace(train_step=_traced_with_flax_dot(before.train_step))
    setups = {"flax dot_general (autodiff)": before, "jaxlm.models.matmul": _common.build(cfg)}
    meter = LoadMeter()
    times, losses = _common.alternate_steps(setups, _common.random_batches(cfg, cfg.model.vocab_size),
                                            args.rounds, args.steps, meter)
    (a, ta), (b, tb) = times.items()
    med_a, med_b = statistics.median(ta), statistics.median(tb)
    diff = max(abs(x - y) for x, y in zip(*losses.values()))
    m = cfg.model
    report = (
        f"jaxlm train step, d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, batch "
        f"{cfg.train.batch_size} x {cfg.data.seq_len}, {_common.compute_dtype(cfg)}, "
        f"{len(before.mesh.devices.flat)} device(s); median of {args.rounds} alternating rounds "
        f"x {args.steps} steps; {meter.line()}. Largest |loss difference| over "
        f"{len(ta) * args.steps} steps: {diff:.1e}.\n\n"
        "| Dense layers' matmul | step (ms) | per round (ms) | step time ratio |\n"
        "|---|---|---|---|\n"
        f"| {a} | {1e3 * med_a:.1f} | {', '.join(f'{1e3 * x:.0f}' for x in ta)} | 1.00x |\n"
        f"| {b} | {1e3 * med_b:.1f} | {', '.join(f'{1e3 * x:.0f}' for x in tb)} | "
        f"{med_b / med_a:.3f}x |")
    print(report)
    if args.append:
        _common.append_results("Dense layers' 2D matmul vs autodiff (bench_dense)", report,
                               meter=meter)


if __name__ == "__main__":
    main()
