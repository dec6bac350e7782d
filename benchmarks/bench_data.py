"""Can the Grain input pipeline keep up with training? Tokens/s the pipeline delivers against
tokens/s the quickstart model consumes, measured side by side in one process.

    python benchmarks/bench_data.py --append
    python benchmarks/bench_data.py --no-sentencepiece --batches 100

For each tokenizer (bytes; a SentencePiece BPE model trained here on a sample of the corpus
unless --no-sentencepiece) on the default `stdlib` corpus, three measurements alternate over
--rounds rounds: the pipeline alone (`pipeline.train_iterator` as the training loop calls it,
batches drawn and dropped), the quickstart train step on batches already in memory, and the
train step fed live from the pipeline (what a run does). The pipeline is never the bottleneck
when pipeline tokens/s >> training tokens/s and the live rate equals the in-memory one.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import jax

import _common
from load import LoadMeter
from jaxlm import config as config_lib
from jaxlm.data import pipeline
from jaxlm.data.corpora import load_corpus
from jaxlm.data.tokenizers import ByteTokenizer, SentencePieceTokenizer, Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=200, help="pipeline batches per round")
    ap.add_argument("--steps", type=int, default=5, help="train steps per round")
    ap.add_argument("--sp-vocab", type=int, default=4096)
    ap.add_argument("--sp-chars", type=int, default=1_000_000, help="SentencePiece training sample")
    ap.add_argument("--no-sentencepiece", action="store_true")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    base = config_lib.load_config(None, [f"train.steps={args.rounds * args.steps + 20}",
                                         "optim.warmup_steps=2"])
    d, t = base.data, base.train
    corpus = load_corpus(d.corpus, validation_fraction=d.validation_fraction)
    tokenizers: dict[str, Tokenizer] = {"byte": ByteTokenizer()}
    notes = [f"corpus {corpus.name}: {len(corpus.train)} train docs"]
    if not args.no_sentencepiece:
        t0 = time.perf_counter()
        tokenizers[f"sentencepiece bpe {args.sp_vocab}"] = SentencePieceTokenizer.train(
            corpus.train, args.sp_vocab, "bpe", max_chars=args.sp_chars, seed=d.seed)
        notes.append(f"SentencePiece trained on {args.sp_chars:,} characters in "
                     f"{time.perf_counter() - t0:.1f} s (not counted)")
    tokens_per_batch = t.batch_size * d.seq_len
    rows = []
    meter = LoadMeter()
    for name, tok in tokenizers.items():
        cfg = config_lib.replace(base, **{"model.vocab_size": tok.vocab_size})
        setup = _common.build(cfg)

        def iterator():
            return pipeline.train_iterator(corpus.train, tok, seq_len=d.seq_len,
                                           global_batch=t.batch_size, seed=d.seed,
                                           shuffle_window=d.shuffle_window)

        it = iterator()
        t0 = time.perf_counter()
        first = next(it)  # threads start, the first documents are read
        startup = time.perf_counter() - t0
        held = [jax.device_put(b, setup.batch_sharding) for b in [first, *itertools.islice(it, 1)]]
        state = setup.state
        state, m = setup.train_step(state, held[0])  # compiles
        float(m["loss"])
        for _ in range(args.batches):  # drain what grain prefetched meanwhile (not steady state)
            next(it)
        rates: dict[str, list[float]] = {"pipeline": [], "train (batches in memory)": [],
                                         "train fed by the pipeline": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with meter.timed():
                for _ in range(args.batches):
                    next(it)
            rates["pipeline"].append(args.batches * tokens_per_batch / (time.perf_counter() - t0))
            for key, source in (("train (batches in memory)", None),
                                ("train fed by the pipeline", it)):
                t0 = time.perf_counter()
                with meter.timed():
                    for i in range(args.steps):
                        batch = (held[i % 2] if source is None
                                 else jax.device_put(next(source), setup.batch_sharding))
                        state, m = setup.train_step(state, batch)
                    float(m["loss"])
                rates[key].append(args.steps * tokens_per_batch / (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in rates.items()}
        # the slowest round: a round after grain refilled its buffers in the background reads fast
        med["pipeline"] = min(rates["pipeline"])
        rows.append((name, tok.vocab_size, startup, med))
        print(name, {k: [round(x) for x in v] for k, v in rates.items()}, flush=True)
    lines = ["| tokenizer | vocab | pipeline start (s) | pipeline tokens/s | train tokens/s "
             "(in memory) | train tokens/s (fed live) | pipeline / train |",
             "|---|---|---|---|---|---|---|"]
    for name, vocab, startup, med in rows:
        p, tr = med["pipeline"], med["train (batches in memory)"]
        live = med["train fed by the pipeline"]
        lines.append(f"| {name} | {vocab} | {startup:.2f} | {p:,.0f} | {tr:,.0f} | {live:,.0f} | "
                     f"**{p / tr:.0f}x** |")
    notes.append(f"quickstart model and batch ({t.batch_size} x {d.seq_len}), median (pipeline: "
                 f"slowest) of {args.rounds} rounds ({args.batches} pipeline batches, "
                 f"{args.steps} steps each); {meter.line()}")
    table = "\n".join(lines)
    print(table + "\n\n" + "; ".join(notes) + ".")
    if args.append:
        _common.append_results("data pipeline vs training throughput (bench_data)",
                               "; ".join(notes) + ".\n\n" + table, "grain", "sentencepiece",
                               meter=meter)


if __name__ == "__main__":
    main()
