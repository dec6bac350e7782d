"""The training loop: the side-effect edge around the pure, jitted steps.

Sets up the run directory (resolved config, tokenizer), data, mesh and sharded state, resumes
from the newest checkpoint when there is one, then trains with no host sync per step: step t is
dispatched before step t-1's metrics are fetched, and metrics are fetched only at log steps.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Optional

import jax
import numpy as np
import yaml

from jaxlm import config as config_lib
from jaxlm import flops, sharding
from jaxlm.config import RunConfig
from jaxlm.data import pipeline
from jaxlm.data.corpora import Corpus, load_corpus
from jaxlm.data.tokenizers import (
    TOKENIZER_JSON, ByteTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer,
)
from jaxlm.errors import JaxlmError
from jaxlm.evaluate import evaluate
from jaxlm.generate import sample_tokens
from jaxlm.models import build_model
from jaxlm.train import metrics as metrics_lib
from jaxlm.train.checkpoint import Checkpointer
from jaxlm.train.optim import build_optimizer, schedule
from jaxlm.train.state import init_state, state_shardings
from jaxlm.train.step import compile_steps

CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.txt"
# Keys that must not change when resuming: they change what the checkpoint means.
_RESUME_FIXED = ("model", "data.tokenizer", "data.sp_model", "data.sp_vocab_size",
                 "data.sp_model_type", "data.seq_len")


def _prepare_workdir(workdir: pathlib.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise JaxlmError(f"workdir {workdir} is not writable: {e.strerror}") from None


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def _check_resume_compatible(cfg: RunConfig, saved_path: pathlib.Path) -> None:
    saved = yaml.safe_load(saved_path.read_text()) or {}
    new = config_lib.to_dict(cfg)
    for key in _RESUME_FIXED:
        old_v, new_v = _get(saved, key), _get(new, key)
        if key == "model":  # vocab_size is resolved later; compare everything else
            old_v = {k: v for k, v in old_v.items() if k != "vocab_size"}
            new_v = {k: v for k, v in new_v.items() if k != "vocab_size"}
        if old_v != new_v:
            changed = key
            if isinstance(old_v, dict):
                diff = sorted(k for k in set(old_v) | set(new_v) if old_v.get(k) != new_v.get(k))
                changed = ", ".join(f"{key}.{k}: {old_v.get(k)} -> {new_v.get(k)}" for k in diff)
            else:
                changed = f"{key}: {old_v} -> {new_v}"
            raise JaxlmError(
                f"cannot resume in {saved_path.parent}: its checkpoints were made with a different "
                f"config ({changed}); use a new --workdir"
            )


def _tokenizer(cfg: RunConfig, corpus: Corpus, workdir: pathlib.Path, log) -> Tokenizer:
    d = cfg.data
    if (workdir / TOKENIZER_JSON).exists():
        return load_tokenizer(workdir)
    if d.tokenizer == "byte":
        return ByteTokenizer()
    if d.sp_model:
        return SentencePieceTokenizer.load(d.sp_model)
    log(f"training a SentencePiece {d.sp_model_type} tokenizer ({d.sp_vocab_size} pieces) "
        f"on up to {d.sp_train_chars:,} characters of the train split")
    n_docs = len(corpus.train)
    order = np.random.default_rng(d.seed).permutation(n_docs)
    texts, total = [], 0
    for i in order:
        if total >= d.sp_train_chars:
            break
        texts.append(corpus.train[int(i)])
        total += len(texts[-1])
    return SentencePieceTokenizer.train(
        texts, d.sp_vocab_size, d.sp_model_type, max_chars=d.sp_train_chars, seed=d.seed
    )


@dataclasses.dataclass
class RunResult:
    workdir: pathlib.Path
    config: RunConfig
    final_step: int
    eval: dict[str, float]
    samples: list[str]
    wall_time: float
    tokens_per_sec: float
    params: Any = dataclasses.field(repr=False, default=None)


def train(cfg: RunConfig, workdir: str | os.PathLike, *, quiet: bool = False) -> RunResult:
    """Trains (or resumes) the run in `workdir` to `cfg.train.steps`; evaluates and samples."""
    t_start = time.time()
    workdir = pathlib.Path(workdir)
    main = jax.process_index() == 0
    show = main and not quiet
    log = lambda msg: metrics_lib.log(msg, show)  # noqa: E731

    _prepare_workdir(workdir)
    ckpt_dir = workdir / "checkpoints"
    resuming = (workdir / CONFIG_FILE).exists() and ckpt_dir.exists() and any(ckpt_dir.iterdir())
    if resuming:
        _check_resume_compatible(cfg, workdir / CONFIG_FILE)

    d, t = cfg.data, cfg.train
    corpus = load_corpus(
        d.corpus, validation_fraction=d.validation_fraction, text_key=d.text_key,
        train_split=d.train_split, eval_split=d.eval_split, tfds_data_dir=d.tfds_data_dir,
        tfds_download=d.tfds_download, cache_dir=d.cache_dir,
    )
    tokenizer = _tokenizer(cfg, corpus, workdir, log)
    if cfg.model.vocab_size is None:
        cfg = config_lib.replace(cfg, **{"model.vocab_size": tokenizer.vocab_size})
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise JaxlmError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens"
        )
    if main:
        (workdir / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
        tokenizer.save(workdir)

    mesh = sharding.make_mesh(cfg.mesh)
    dp = sharding.data_parallel_size(mesh)
    if t.batch_size % dp:
        raise JaxlmError(
            f"train.batch_size={t.batch_size} does not divide over the {dp}-way data-parallel "
            f"mesh (mesh.data x mesh.fsdp)"
        )
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optim, t.steps)
    lr_schedule = schedule(cfg.optim, t.steps)
    abstract, shardings = state_shardings(model, optimizer, d.seq_len, mesh)
    train_step, eval_step = compile_steps(model, optimizer, lr_schedule, shardings, mesh)

    proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_it = pipeline.train_iterator(
        corpus.train, tokenizer, seq_len=d.seq_len, global_batch=t.batch_size, seed=d.seed,
        shuffle_window=d.shuffle_window, **proc,
    )
    batch_sh = sharding.batch_sharding(mesh)

    def put(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(batch_sh, v) for k, v in batch.items()}

    def eval_batches(n: int):
        return pipeline.eval_batches(corpus.eval, tokenizer, seq_len=d.seq_len,
                                     global_batch=t.batch_size, max_batches=n, **proc)

    token_bytes = jax.device_put(tokenizer.token_bytes().astype(np.float32),
                                 sharding.replicated(mesh))
    writer = metrics_lib.MetricsWriter(workdir, enabled=main)
    ckpt = Checkpointer(ckpt_dir, keep=t.keep_checkpoints)
    start_step = ckpt.latest_step()
    if start_step is not None:
        state = ckpt.restore(start_step, abstract, shardings, train_it)
        writer.truncate_after(start_step)
        log(f"resuming {workdir} from the checkpoint at step {start_step}")
    else:
        state, _ = init_state(model, optimizer, seed=t.seed, seq_len=d.seq_len, mesh=mesh)
        start_step = 0

    total_params, non_embed = flops.param_counts(state.params)
    fpt = flops.flops_per_token(cfg.model, non_embed, d.seq_len)
    header = {
        "event": "start", "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "processes": jax.process_count(), "mesh": dict(mesh.shape), "family": cfg.model.family,
        "params": total_params, "params_non_embedding": non_embed, "flops_per_token": fpt,
        "compute_dtype": cfg.model.dtype, "attention": cfg.model.attention_impl,
        "vocab_size": cfg.model.vocab_size, "corpus": corpus.name, "train_docs": len(corpus.train),
        "eval_docs": len(corpus.eval), "start_step": start_step,
    }
    writer.write(header)
    log(f"jaxlm: {cfg.model.family} with {total_params:,} params ({non_embed:,} non-embedding) "
        f"on {header['devices']}, mesh {dict(mesh.shape)}, {cfg.model.dtype} compute; "
        f"{corpus.name}: {len(corpus.train)} train / {len(corpus.eval)} eval docs; "
        f"vocab {cfg.model.vocab_size}; workdir {workdir}")

    tokens_per_step = t.batch_size * d.seq_len
    bar = metrics_lib.progress(t.steps, initial=start_step, enabled=show)
    pending: Optional[tuple[int, Any, bool]] = None
    last_log = (time.time(), start_step)
    rate = 0.0
    last_saved = start_step if start_step else None

    def flush(step: int, metrics: Any, do_eval: bool) -> None:
        nonlocal last_log, rate
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        steps_done = step - last_log[1]
        rate = steps_done * tokens_per_step / max(now - last_log[0], 1e-9)
        last_log = (now, step)
        record = {"step": step, "loss": m["loss"], "learning_rate": m["learning_rate"],
                  "grad_norm": m["grad_norm"], "tokens_per_sec": rate,
                  "tokens_seen": step * tokens_per_step}
        if do_eval:
            record.update(evaluate(eval_step, state.params, eval_batches(t.eval_batches),
                                   token_bytes, put))
            last_log = (time.time(), step)  # eval time is not training throughput
        writer.write(record)
        post = {"loss": f"{m['loss']:.3f}", "tok/s": f"{rate:,.0f}"}
        if do_eval:
            post["eval_bpb"] = f"{record['eval_bpb']:.3f}"
        bar.set_postfix(post, refresh=False)

    try:
        for step in range(start_step + 1, t.steps + 1):
            batch = put(next(train_it))
            if step == start_step + 1:
                t0 = time.time()
                state, metrics = train_step(state, batch)
                jax.block_until_ready(metrics)
                writer.write({"event": "compiled", "step": step, "compile_time_sec": time.time() - t0})
                last_log = (time.time(), step)
            else:
                state, metrics = train_step(state, batch)
            if pending is not None:  # step t is dispatched; now fetch step t-1's metrics
                flush(*pending)
                pending = None
            do_eval = bool(t.eval_every) and step % t.eval_every == 0 and step != t.steps
            if step % t.log_every == 0 or do_eval or step == t.steps:
                pending = (step, metrics, do_eval)
            if do_eval:  # eval must see this step's params: flush now
                flush(*pending)
                pending = None
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step != t.steps:
                ckpt.save(step, state, train_it)
                last_saved = step
            bar.update(1)
        if pending is not None:
            flush(*pending)
        bar.close()

        final_step = int(jax.device_get(state.step))
        if last_saved != final_step:
            ckpt.save(final_step, state, train_it)
        log(f"evaluating at step {final_step} on "
            f"{t.final_eval_batches or 'all'} eval batches of {t.batch_size}x{d.seq_len} tokens")
        final_eval = evaluate(eval_step, state.params, eval_batches(t.final_eval_batches),
                              token_bytes, put)
        train_rate = rate
        writer.write({"event": "final", "step": final_step, **final_eval,
                      "tokens_per_sec": train_rate, "wall_time_sec": time.time() - t_start})
        samples = _samples(cfg, model, state.params, tokenizer)
        if main:
            (workdir / SAMPLES_FILE).write_text(
                "".join(f"--- sample {i + 1} ---\n{s}\n" for i, s in enumerate(samples))
            )
        ckpt.close()
    finally:
        bar.close()
        writer.close()
    return RunResult(workdir, cfg, final_step, final_eval, samples, time.time() - t_start,
                     train_rate, state.params)


def _samples(cfg: RunConfig, model, params, tokenizer: Tokenizer) -> list[str]:
    t = cfg.train
    if not t.samples:
        return []
    prompt = [int(i) for i in tokenizer.encode(t.sample_prompt)] or [tokenizer.eos_id]
    max_len = cfg.model.max_seq_len if cfg.model.family == "transformer" else len(prompt) + t.sample_tokens
    ids = np.asarray(sample_tokens(
        model, params, prompt, num_samples=t.samples, max_new_tokens=t.sample_tokens,
        max_len=max_len, temperature=t.sample_temperature, seed=t.seed,
    ))
    out = []
    for row in ids:
        row = [int(x) for x in row]
        if tokenizer.eos_id in row[len(prompt):]:
            row = row[: len(prompt) + row[len(prompt):].index(tokenizer.eos_id)]
        out.append(tokenizer.decode(row))
    return out
