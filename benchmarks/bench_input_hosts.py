"""Per-host input vs the global stream (data.input), with P input processes side by side.

    python benchmarks/bench_input_hosts.py
    python benchmarks/bench_input_hosts.py --processes 2 --batches 400 --rounds 3 --append

Each of P child processes plays one host of a P-host run and builds the train iterator exactly
as that host's training would (jaxlm.data.pipeline.train_iterator): in `global` mode the whole
global batch is tokenized and packed and the host keeps its 1/P of the rows; in `per_host`
mode the host reads, tokenizes and packs only its shard of the documents into its own rows.
The children run at once (on this machine they share its cores, as hosts would not), each draws
--batches batches per round after a warm-up, and reports its wall time and CPU time (all
threads, read when Grain's read-ahead is idle: see `_settled`). Printed per mode: the CPU
seconds one host spends per global batch (the work that per-host input should divide by P),
and the run's input rate in global-batch tokens per CPU-second of the busiest host (what a host
with its cores to itself could feed; wall-clock rates on a shared machine mostly measure the
other processes). The default corpus (`stdlib`), the byte tokenizer, and the quickstart batch
(16 x 256) unless overridden.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from load import LoadMeter


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _settled() -> float:
    """This process's CPU seconds once Grain's read-ahead threads are idle: its buffer (64
    documents, ~1M tokens of this corpus) is then full, at the start and at the end of a timed
    round alike, so the CPU time between two readings is the work of the batches drawn."""
    for _ in range(60):
        before = _cpu()
        time.sleep(0.5)
        if _cpu() - before < 0.01:
            break
    return _cpu()


def _child(mode: str, index: int, count: int, batches: int, rounds: int, batch: int,
           seq_len: int) -> dict:
    from jaxlm.data import pipeline
    from jaxlm.data.corpora import load_corpus
    from jaxlm.data.hosts import InputShard
    from jaxlm.data.tokenizers import ByteTokenizer

    corpus = load_corpus("stdlib", validation_fraction=0.05)
    rows = batch // count
    kw = dict(seq_len=seq_len, global_batch=batch, seed=0)
    it = (pipeline.train_iterator(corpus.train, ByteTokenizer(), shard=InputShard(index, count),
                                  **kw) if mode == "per_host" else
          pipeline.train_iterator(corpus.train, ByteTokenizer(),
                                  local_rows=slice(index * rows, (index + 1) * rows), **kw))
    for _ in range(batches):  # warm-up: threads started
        next(it)
    walls, cpus = [], []
    for _ in range(rounds):
        c0, t0 = _settled(), time.perf_counter()
        for _ in range(batches):
            b = next(it)
        walls.append(time.perf_counter() - t0)
        cpus.append(_settled() - c0)
    assert b["inputs"].shape == (rows, seq_len)
    return {"wall": walls, "cpu": cpus}


def _measure(mode: str, count: int, args) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", mode, "--batches", str(args.batches),
           "--rounds", str(args.rounds), "--batch", str(args.batch), "--seq-len",
           str(args.seq_len), "--processes", str(count)]
    procs = [subprocess.Popen(cmd + ["--index", str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(count)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"a child failed in mode {mode}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batches", type=int, default=400, help="global batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="global batch, in rows")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--child", choices=("global", "per_host"), help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.index, args.processes, args.batches,
                                args.rounds, args.batch, args.seq_len)))
        return

    tokens = args.batches * args.batch * args.seq_len  # global-batch tokens per round
    meter, rows = LoadMeter(), []
    for count, mode in ((1, "global"), (args.processes, "global"), (args.processes, "per_host")):
        with meter.timed():
            hosts = _measure(mode, count, args)
        if min(c for h in hosts for c in h["cpu"]) <= 0.05:  # os.times() ticks at 10 ms
            sys.exit(f"a round of {args.batches} batches took too little CPU time to measure; "
                     f"raise --batches")
        # per round, the busiest host sets the run's rate: global-batch tokens per CPU-second of
        # its pipeline (wall time on this shared machine says more about the others' load)
        rate = statistics.median(tokens / max(h["cpu"][r] for h in hosts)
                                 for r in range(args.rounds))
        cpu = statistics.median(c for h in hosts for c in h["cpu"]) / args.batches
        rows.append((count, mode, cpu, rate))
        print(count, mode, json.dumps(hosts), flush=True)
    base_cpu = rows[1][2]
    lines = ["| processes | data.input | CPU s per global batch, per host | vs global | "
             "input rate (global-batch tokens per CPU-second of the busiest host) |",
             "|---|---|---|---|---|"]
    for count, mode, cpu, rate in rows:
        lines.append(f"| {count} | {mode} | {cpu * 1e3:.1f} ms | {cpu / base_cpu:.2f}x | "
                     f"{rate:,.0f} |")
    note = (f"stdlib corpus, byte tokenizer, global batch {args.batch} x {args.seq_len}, median "
            f"of {args.rounds} rounds of {args.batches} batches after {args.batches} warm-up "
            f"batches; the P processes run at once on this machine; {meter.line()}")
    table = "\n".join(lines)
    print(table + "\n\n" + note + ".")
    if args.append:
        import _common

        _common.append_results("per-host vs global-stream input (bench_input_hosts)",
                               note + ".\n\n" + table, "grain", meter=meter)


if __name__ == "__main__":
    main()
