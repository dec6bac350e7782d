"""jaxlm against karpathy/nanoGPT itself on CPU: tokens/s, launch -> first step, CPU time and the
loss curve of the two training scripts, each run as its own process at the same shape.

    python benchmarks/bench_vs_nanogpt.py --nanogpt ~/src/nanoGPT --append      # both shapes
    python benchmarks/bench_vs_nanogpt.py --nanogpt ~/src/nanoGPT --shape cpu --steps 50 --rounds 1

The checkout is never written to: its train.py, model.py and configurator.py are copied into a
temporary directory, next to a dataset built from the byte stream jaxlm trains on (its default
corpus in its first-epoch document order, ByteTokenizer ids, EOS after each document). Shapes:
`cpu` is nanoGPT's documented CPU config (4 layers x 128, batch 12 x 64, no biases, AdamW as its
train_shakespeare_char.py); `quickstart` is jaxlm's default config. Both sides get the same
architecture, AdamW settings and schedule, float32, no dropout, no evaluation while training.
Each run trains WARMUP + --steps steps. Tokens/s: the median over the timed 10-step windows
(jaxlm logs every 10 steps; nanoGPT's per-iteration times are averaged over the same windows);
rounds alternate the two, the order flipping each round. Launch -> first step: process start to
nanoGPT's `iter 0` / jaxlm's `compiled the train step` line. CPU-s per 100 steps: the child's
/proc/PID/stat user+system time from the end of warm-up to its last step. Every run records the
CPU other processes used meanwhile (load.py); --append refuses to write unless it was quiet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from typing import Any, Optional, Sequence

import numpy as np

from _child import Child, run_child

ROOT = pathlib.Path(__file__).resolve().parent.parent
JAXLM_TRAIN = ROOT / "train.py"
NANOGPT_FILES = ("train.py", "model.py", "configurator.py")
DATASET = "jaxlm_bytes"  # nanoGPT reads data/<dataset>/{train,val}.bin and meta.pkl
DATA_TOKENS = 4_000_000  # train.bin: 8 MB of uint16, more than either side reads in a run
WARMUP = LOG_EVERY = 10  # untimed first steps; jaxlm's log interval is the timing window
ITER_LINE = re.compile(r"^iter (\d+): loss (\S+), time ([\d.]+)ms")
JAXLM_FIRST_STEP = "compiled the train step"
SIDES = ("nanoGPT", "jaxlm")


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    title: str
    n_layer: int
    n_head: int
    n_embd: int
    batch: int
    block: int
    bias: bool
    optim_from: str  # whose AdamW settings both sides get
    lr: float
    min_lr_ratio: float
    warmup: int
    b1: float
    b2: float
    weight_decay: float
    grad_clip: float

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.block


def shapes() -> dict[str, Shape]:
    """nanoGPT's documented CPU config and jaxlm's quickstart shape (from jaxlm's defaults)."""
    from jaxlm.config import load_config

    q = load_config(None, [])
    m, o = q.model, q.optim
    return {
        "cpu": Shape("cpu", "nanoGPT's documented CPU config", 4, 4, 128, 12, 64, False,
                     "nanoGPT's config/train_shakespeare_char.py", lr=1e-3, min_lr_ratio=0.1,
                     warmup=100, b1=0.9, b2=0.99, weight_decay=0.1, grad_clip=1.0),
        "quickstart": Shape("quickstart", "jaxlm's quickstart shape", m.n_layers, m.n_heads,
                            m.d_model, q.train.batch_size, q.data.seq_len, m.use_bias,
                            "jaxlm's default config", o.lr, o.min_lr_ratio, o.warmup_steps,
                            o.b1, o.b2, o.weight_decay, o.grad_clip),
    }


# -- data --------------------------------------------------------------------------------------

def token_stream(texts: Sequence[str], limit: int, seed: Optional[int]) -> np.ndarray:
    """The first `limit` tokens of the documents as jaxlm's pipeline reads its first epoch:
    grain's shuffle with `seed` (in order when None), ByteTokenizer ids, EOS after each."""
    import grain

    from jaxlm.data.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    docs = grain.MapDataset.source(texts)
    if seed is not None:
        docs = docs.shuffle(seed=seed)
    parts, n = [], 0
    for i in range(len(docs)):
        if n >= limit:
            break
        ids = tok.encode(docs[i])
        parts += [ids, np.asarray([tok.eos_id], np.int32)]
        n += len(ids) + 1
    return np.concatenate(parts)[:limit].astype(np.uint16)


def build_data(out: pathlib.Path, train_texts: Sequence[str], eval_texts: Sequence[str], *,
               tokens: int, seed: int) -> int:
    """Writes nanoGPT's train.bin / val.bin (uint16 token ids) and meta.pkl (vocab_size) into
    `out`; returns the tokens in train.bin. val.bin is the eval split in order (a tenth as long;
    nanoGPT only reads it to evaluate, which these runs do not)."""
    from jaxlm.data.tokenizers import ByteTokenizer

    out.mkdir(parents=True, exist_ok=True)
    train = token_stream(train_texts, tokens, seed)
    token_stream(eval_texts, max(tokens // 10, 1), None).tofile(out / "val.bin")
    train.tofile(out / "train.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": ByteTokenizer.vocab_size,
                     "tokenizer": "jaxlm ByteTokenizer: byte b -> b + 3; 0 pad, 1 EOS, 2 mask"}, f)
    return len(train)


def prepare(tmp: pathlib.Path, nanogpt: pathlib.Path) -> tuple[pathlib.Path, str]:
    """nanoGPT's working directory (its scripts + the dataset) and a line describing the data."""
    from jaxlm.config import load_config
    from jaxlm.data.corpora import load_corpus

    work = tmp / "nanogpt"
    work.mkdir()
    for name in NANOGPT_FILES:
        shutil.copy2(nanogpt / name, work / name)
    d = load_config(None, []).data
    corpus = load_corpus(d.corpus, validation_fraction=d.validation_fraction)
    n = build_data(work / "data" / DATASET, corpus.train, corpus.eval, tokens=DATA_TOKENS,
                   seed=d.seed)
    return work, (f"data: {corpus.name}, byte tokens (vocab 259), the first {n:,} tokens of "
                  f"jaxlm's first-epoch stream as nanoGPT's train.bin")


# -- the two sides -----------------------------------------------------------------------------

def _warmup_steps(shape: Shape, total: int) -> int:
    return min(shape.warmup, total - 1)  # jaxlm requires warmup < steps


def nanogpt_cmd(shape: Shape, total: int) -> list[str]:
    """nanoGPT's train.py with every setting given (its configurator: --key=value)."""
    s = shape
    settings: dict[str, Any] = dict(
        device="cpu", compile=False, dtype="float32", dataset=DATASET, out_dir="out",
        init_from="scratch", eval_interval=total + 1, eval_iters=0, log_interval=1,
        always_save_checkpoint=False, wandb_log=False, gradient_accumulation_steps=1,
        batch_size=s.batch, block_size=s.block, n_layer=s.n_layer, n_head=s.n_head,
        n_embd=s.n_embd, dropout=0.0, bias=s.bias, learning_rate=s.lr,
        max_iters=total - 1,  # iterations 0..max_iters
        lr_decay_iters=total, min_lr=s.lr * s.min_lr_ratio,
        warmup_iters=_warmup_steps(s, total), decay_lr=True, beta1=s.b1, beta2=s.b2,
        weight_decay=s.weight_decay, grad_clip=s.grad_clip)
    # configurator.py literal_evals each value and checks its type: floats need their dot
    return [sys.executable, "train.py", *(f"--{k}={v!r}" if isinstance(v, float) else f"--{k}={v}"
                                          for k, v in settings.items())]


def jaxlm_cmd(shape: Shape, total: int, workdir: pathlib.Path) -> list[str]:
    """jaxlm's train.py with nanoGPT's architecture and the shape's optimizer settings."""
    s = shape
    overrides = [
        "model.family=transformer", "model.objective=clm", "model.position=learned",
        "model.norm=layernorm", "model.norm_eps=1e-5", "model.mlp=gelu",
        f"model.d_ff={4 * s.n_embd}", "model.tie_embeddings=true",
        f"model.use_bias={str(s.bias).lower()}",
        "model.dropout=0.0", "model.dtype=float32", "model.param_dtype=float32",
        f"model.n_layers={s.n_layer}", f"model.n_heads={s.n_head}", f"model.d_model={s.n_embd}",
        f"model.max_seq_len={s.block}", f"data.seq_len={s.block}", "data.tokenizer=byte",
        f"train.steps={total}", f"train.batch_size={s.batch}", "train.grad_accum=1",
        f"train.log_every={LOG_EVERY}", "train.eval_every=0", "train.final_eval_batches=1",
        "train.checkpoint_every=0", "train.samples=0",
        "optim.name=adamw", "optim.schedule=cosine", f"optim.lr={s.lr!r}",
        f"optim.min_lr_ratio={s.min_lr_ratio!r}", f"optim.warmup_steps={_warmup_steps(s, total)}",
        f"optim.b1={s.b1!r}", f"optim.b2={s.b2!r}", "optim.eps=1e-8",
        f"optim.weight_decay={s.weight_decay!r}", f"optim.grad_clip={s.grad_clip!r}"]
    return [sys.executable, str(JAXLM_TRAIN), "--workdir", str(workdir), *overrides]


# -- reading what the children did ------------------------------------------------------------

def parse_iter_line(line: str) -> Optional[tuple[int, float, float]]:
    """(iteration, loss, milliseconds) of nanoGPT's `iter N: loss X, time Yms, mfu Z%` line."""
    m = ITER_LINE.match(line.strip())
    return (int(m[1]), float(m[2]), float(m[3])) if m else None


def _windows(total: int) -> range:
    """The last steps of the timed 10-step windows."""
    return range(WARMUP + LOG_EVERY, total + 1, LOG_EVERY)


def _summary(tps: list[float], launch: float, first_step: float, cpu: tuple, total: int,
             losses: dict[int, float], child: Child) -> dict[str, Any]:
    cpu0, cpu1 = cpu
    return {"tokens_per_sec": statistics.median(tps), "launch_to_first_step_s": launch,
            "first_step_s": first_step,
            "cpu_s_per_100_steps": (None if cpu0 is None or cpu1 is None
                                    else (cpu1 - cpu0) / (total - WARMUP) * 100),
            "cpu_s_whole": child.cpu_total, "wall_s": child.wall, "losses": losses}


def nanogpt_summary(child: Child, shape: Shape, total: int) -> dict[str, Any]:
    by_step = {}  # step (1-based, as jaxlm counts) -> (t, cpu, loss, seconds)
    for t, cpu, text in child.lines:
        parsed = parse_iter_line(text)
        if parsed:
            by_step[parsed[0] + 1] = (t, cpu, parsed[1], parsed[2] / 1000)
    if sorted(by_step) != list(range(1, total + 1)):
        raise RuntimeError(f"nanoGPT printed `iter N:` lines for {len(by_step)} of {total} "
                           f"iterations; is --log_interval honoured by this checkout?")
    tps = [shape.tokens_per_step / statistics.fmean(by_step[s][3] for s in range(
        e - LOG_EVERY + 1, e + 1)) for e in _windows(total)]
    return _summary(tps, by_step[1][0], by_step[1][3], (by_step[WARMUP][1], by_step[total][1]),
                    total, {s: by_step[s][2] for s in loss_steps(total)}, child)


def jaxlm_summary(child: Child, total: int) -> dict[str, Any]:
    steps = {r["step"]: (t, cpu, r) for t, cpu, r in child.records
             if "step" in r and "event" not in r}
    compiled = next((r for _, _, r in child.records if r.get("event") == "compiled"), None)
    if compiled is None or total not in steps:
        raise RuntimeError(f"jaxlm's metrics.jsonl has no `compiled` record or no step {total}")
    launch = next((t for t, _, text in child.lines if JAXLM_FIRST_STEP in text), None)
    if launch is None:  # the line is not printed (quiet): the record, up to 20 ms later
        launch = next(t for t, _, r in child.records if r.get("event") == "compiled")
    return _summary([steps[e][2]["tokens_per_sec"] for e in _windows(total)], launch,
                    compiled["compile_time_sec"], (steps[WARMUP][1], steps[total][1]), total,
                    {s: steps[s][2]["loss"] for s in loss_steps(total)}, child)


def loss_steps(total: int) -> list[int]:
    """Steps whose losses the table shows: the first logged one, then about each quarter."""
    quarters = (max(LOG_EVERY, round(total * k / 4 / LOG_EVERY) * LOG_EVERY) for k in (1, 2, 3))
    return sorted({LOG_EVERY, *quarters, total})


def run_side(side: str, shape: Shape, total: int, tmp: pathlib.Path, nano_work: pathlib.Path,
             run_id: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines must arrive when they are printed
    if side == "nanoGPT":
        return nanogpt_summary(run_child(nanogpt_cmd(shape, total), nano_work, env), shape, total)
    workdir = tmp / f"jaxlm-{run_id}"  # a fresh run directory: an existing one would resume
    env["JAX_PLATFORMS"] = "cpu"
    child = run_child(jaxlm_cmd(shape, total, workdir), tmp, env, workdir / "metrics.jsonl")
    return jaxlm_summary(child, total)


# -- the report --------------------------------------------------------------------------------

def _fmt(x: Optional[float], spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def _ratio(j: Optional[float], n: Optional[float]) -> str:
    return "" if not j or not n else f"{j / n:.2f}x"


def table(shape: Shape, runs: dict[str, list[dict]], total: int) -> str:
    s = shape

    def med(side: str, key: str) -> Optional[float]:
        vals = [r[key] for r in runs[side] if r[key] is not None]
        return statistics.median(vals) if vals else None

    def spread(side: str) -> str:
        v = [r["tokens_per_sec"] for r in runs[side]]
        return f"{med(side, 'tokens_per_sec'):,.0f} ({min(v):,.0f}-{max(v):,.0f})"

    head = (f"**{s.name}** ({s.title}): {s.n_layer} layers x {s.n_embd} wide, {s.n_head} heads, "
            f"batch {s.batch} x {s.block} tokens, vocab 259 (bytes), biases "
            f"{'on' if s.bias else 'off'}; AdamW as {s.optim_from} (lr {s.lr:g} -> "
            f"{s.lr * s.min_lr_ratio:g} cosine over {total} steps, warmup "
            f"{_warmup_steps(s, total)}, betas {s.b1:g}/{s.b2:g}, weight decay "
            f"{s.weight_decay:g}, clip {s.grad_clip:g}); {total} steps per run, the first "
            f"{WARMUP} untimed")
    tps = [med(x, "tokens_per_sec") for x in SIDES]
    rows = [head, "", "| | nanoGPT | jaxlm | jaxlm / nanoGPT |", "|---|---|---|---|",
            f"| tokens/s, median (min-max) | {spread('nanoGPT')} | {spread('jaxlm')} | "
            f"**{_ratio(tps[1], tps[0])}** |"]
    for key, label, spec in (
            ("launch_to_first_step_s", "launch -> first step done, s", ".1f"),
            ("first_step_s", "the first step itself, s (jaxlm: with its compile)", ".2f"),
            ("cpu_s_per_100_steps", "CPU-s per 100 steps after warm-up", ".1f"),
            ("cpu_s_whole", "CPU-s, whole process", ".1f")):
        n, j = med("nanoGPT", key), med("jaxlm", key)
        rows.append(f"| {label} | {_fmt(n, spec)} | {_fmt(j, spec)} | {_ratio(j, n)} |")
    for step in loss_steps(total):
        n, j = (runs[x][0]["losses"][step] for x in SIDES)
        rows.append(f"| loss at step {step} (round 1) | {n:.3f} | {j:.3f} | |")
    return "\n".join(rows)


def _git_head(path: pathlib.Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return out.stdout.strip() if out.returncode == 0 else "not a git checkout"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", required=True, type=pathlib.Path, metavar="PATH",
                    help="a karpathy/nanoGPT checkout (read only)")
    ap.add_argument("--shape", choices=["cpu", "quickstart", "both"], default="both")
    ap.add_argument("--steps", type=int, default=200,
                    help=f"timed steps per run (a multiple of {LOG_EVERY}; rounded up), after "
                         f"{WARMUP} untimed ones")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per shape")
    ap.add_argument("--append", action="store_true", help="append the tables to RESULTS.md")
    args = ap.parse_args(argv)
    missing = [n for n in NANOGPT_FILES if not (args.nanogpt / n).is_file()]
    if missing:
        ap.error(f"--nanogpt {args.nanogpt} is not a nanoGPT checkout (no {', '.join(missing)})")
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from load import LoadMeter

    chosen = [s for name, s in shapes().items() if args.shape in (name, "both")]
    total = WARMUP + -(-args.steps // LOG_EVERY) * LOG_EVERY
    meter, sections = LoadMeter(), []
    with tempfile.TemporaryDirectory(prefix="bench_vs_nanogpt-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        nano_work, data_line = prepare(tmp, args.nanogpt.resolve())
        for shape in chosen:
            runs: dict[str, list[dict]] = {x: [] for x in SIDES}
            for r in range(args.rounds):
                for side in SIDES[:: 1 if r % 2 == 0 else -1]:
                    with meter.timed():
                        result = run_side(side, shape, total, tmp, nano_work, f"{shape.name}-{r}")
                    runs[side].append(result)
                    print(json.dumps({"shape": shape.name, "round": r + 1, "side": side,
                                      **result}), flush=True)
            sections.append(table(shape, runs, total))
    try:
        torch = f"torch {metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        torch = "torch (version unknown)"
    notes = (f"nanoGPT {_git_head(args.nanogpt)} ({torch}, its default threads, --device=cpu "
             f"--compile=False --dtype=float32); jaxlm {_git_head(ROOT)[:12]}; {data_line}; "
             f"tokens/s = median over the {LOG_EVERY}-step windows after warm-up, per run; the "
             f"table: the median run and the spread over {args.rounds} alternating rounds. "
             f"Losses are single-batch training losses from round 1, and the batches differ "
             f"(nanoGPT samples random windows of train.bin, jaxlm reads the stream in order, "
             f"rows shuffled within windows of 1024): compare trends, not step-by-step values; "
             f"nanoGPT's warmup starts at lr/(warmup+1), jaxlm's at 0. {meter.line()}.")
    body = "\n\n".join(sections)
    print(f"\n{body}\n\n{notes}")
    if args.append:
        import _common

        _common.append_results("jaxlm vs nanoGPT on CPU (bench_vs_nanogpt)", f"{notes}\n\n{body}",
                               "torch", meter=meter)


if __name__ == "__main__":
    main()
