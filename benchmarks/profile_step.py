"""Where a jaxlm train step spends its time: a jax.profiler trace of a few steps, XLA's ops
grouped by the jaxlm code they come from (HLO op_name metadata, layers merged).

    python benchmarks/profile_step.py                         # the quickstart
    python benchmarks/profile_step.py --append model.max_seq_len=1024 data.seq_len=1024 \\
        train.batch_size=4

Prints the share of op time per part (attention core, attention projections, MLP, norms,
embedding/logits/loss, optimizer update) and the top ops; op time is summed over XLA's
worker threads, so it exceeds wall time on a multi-core CPU. Random token batches.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import tempfile

import jax

import _common
from load import LoadMeter

PARTS = (  # (part, op_name pattern), first match wins
    ("attention projections", r"/attn/(query|key|value|out)/"),
    ("attention core (scores, softmax, weighted values)", r"/attn/"),
    ("MLP", r"/mlp/"),
    ("norms", r"/(ln_\d|ln_f|norm)/|/ln_"),
    ("embedding, logits, loss",
     r"wte|wpe|log_softmax|logsumexp|softmax_cross|reduce_max|take_along"),
    ("model, other (residuals, casts)", r"jvp\("),
    ("optimizer update, clipping, guards", r"."),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="steps traced")
    ap.add_argument("--top", type=int, default=12, help="ops listed")
    ap.add_argument("--append", action="store_true", help="append the tables to RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="config overrides (default: the quickstart)")
    args = ap.parse_args()

    cfg = _common.byte_config(args.overrides)
    setup = _common.build(cfg)
    b, t = cfg.train.batch_size, cfg.data.seq_len
    batch = jax.device_put(_common.random_batches(cfg, cfg.model.vocab_size, n=1)[0],
                           setup.batch_sharding)
    step = setup.train_step.lower(setup.state, batch).compile()
    names = {}  # HLO instruction -> op_name, from the executable that runs
    for line in step.as_text().splitlines():
        m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{op_name="([^"]+)"', line)
        if m:
            names[m.group(1)] = re.sub(r"h_\d+/", "h_*/", m.group(2).split("/", 1)[-1])
    state = setup.state
    for _ in range(2):
        state, m = step(state, batch)
        float(m["loss"])
    with tempfile.TemporaryDirectory() as tmp:
        meter = LoadMeter()
        with jax.profiler.trace(tmp), meter.timed():
            for _ in range(args.steps):
                state, m = step(state, batch)
                float(m["loss"])
        xplane = next(pathlib.Path(tmp).rglob("*.xplane.pb"))
        trace = jax.profiler.ProfileData.from_file(str(xplane))
    by_op: collections.Counter = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            for ev in line.events:
                if ev.name in names:  # XLA ops (not the executor's or Python's own events)
                    by_op[names[ev.name]] += ev.duration_ns / args.steps / 1e6
    total = sum(by_op.values())
    parts: collections.Counter = collections.Counter()
    for op, ms in by_op.items():
        parts[next(p for p, pat in PARTS if re.search(pat, op))] += ms
    m = cfg.model
    head = (f"{m.family}, d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, batch "
            f"{b} x {t}, {_common.compute_dtype(cfg)}, attention {_common.attention_impl(cfg)}; "
            f"op time {total:.0f} ms per step (summed over XLA's threads), {args.steps} steps; "
            f"{meter.line()}.")
    lines = ["| part | ms per step | share |", "|---|---|---|"]
    lines += [f"| {p} | {ms:.0f} | {100 * ms / total:.0f}% |" for p, ms in parts.most_common()]
    lines += ["", "| op (op_name, layers merged) | ms per step | share |", "|---|---|---|"]
    lines += [f"| `{op[:90]}` | {ms:.1f} | {100 * ms / total:.1f}% |"
              for op, ms in by_op.most_common(args.top)]
    report = head + "\n\n" + "\n".join(lines)
    print(report)
    if args.append:
        _common.append_results("where the train step's time goes (profile_step)", report,
                               meter=meter)


if __name__ == "__main__":
    main()
