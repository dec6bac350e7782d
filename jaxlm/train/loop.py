"""The training loop: the side-effect edge around the pure, jitted steps.

Sets up the run directory (resolved config, tokenizer), data, mesh and sharded state, resumes
from the newest checkpoint when there is one, then trains with no host sync per step: step t is
dispatched before step t-1's metrics are fetched, and metrics are fetched only at log steps.

Faults: the newest whole checkpoint is found before anything in the run directory is written
(damaged ones are reported and moved aside by the Checkpointer); SIGTERM/SIGINT checkpoint the
step reached and stop (`RunResult.preempted`); a step with a non-finite loss or gradient norm
leaves the state as it was (inside the jitted step) and is counted, or halts the run
(`train.nonfinite=halt`, NonFiniteError).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import yaml

from jaxlm import config as config_lib
from jaxlm import flops, sharding
from jaxlm.config import RunConfig
from jaxlm.data import labelled, pipeline
from jaxlm.data.corpora import Corpus, load_corpus
from jaxlm.data.prefetch import DevicePrefetcher
from jaxlm.data.tokenizers import (
    TOKENIZER_JSON, ByteTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer,
)
from jaxlm.errors import JaxlmError, NonFiniteError
from jaxlm.evaluate import evaluate
from jaxlm.generate import generate
from jaxlm.models import attention, build_model
from jaxlm.config import is_causal
from jaxlm.train import metrics as metrics_lib
from jaxlm.train.checkpoint import Checkpointer
from jaxlm.train.preemption import StopSignals
from jaxlm.train.optim import build_optimizer, schedule
from jaxlm.train.state import init_state, state_shardings
from jaxlm.eval_run import mlm_spec
from jaxlm.train.step import compile_steps

CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.txt"
# Keys that must not change when resuming: they change what the checkpoint means.
_RESUME_FIXED = ("model", "data.tokenizer", "data.sp_model", "data.sp_vocab_size",
                 "data.sp_model_type", "data.seq_len")
# model keys that change how the same parameters are computed with, not what they mean
_RESUME_FREE = ("vocab_size", "remat", "attention_impl", "dtype")


def _prepare_workdir(workdir: pathlib.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"  # per process: hosts share workdirs
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
        if key == "model":  # vocab_size is resolved later; how it computes may change
            old_v = {k: v for k, v in old_v.items() if k not in _RESUME_FREE}
            new_v = {k: v for k, v in new_v.items() if k not in _RESUME_FREE}
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


def _tokenizer(cfg: RunConfig, corpus: Corpus, workdir: pathlib.Path, log,
               show: bool = False) -> Tokenizer:
    d = cfg.data
    if (workdir / TOKENIZER_JSON).exists():
        return load_tokenizer(workdir)
    init_from = pathlib.Path(cfg.train.init_from).expanduser() if cfg.train.init_from else None
    if init_from is not None and (init_from / TOKENIZER_JSON).exists():
        return load_tokenizer(init_from)  # fine-tuning: the token ids the weights were made with
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
    t0 = time.time()
    tok = SentencePieceTokenizer.train(texts, d.sp_vocab_size, d.sp_model_type,
                                       max_chars=d.sp_train_chars, seed=d.seed,
                                       show_progress=show)
    log(f"trained the tokenizer in {time.time() - t0:.1f} s")
    return tok


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
    preempted: bool = False  # stopped by SIGTERM/SIGINT after checkpointing: re-run to resume
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient norm
    mfu: float = 0.0  # model FLOPs utilization at the last log step (see jaxlm.flops)


def train(cfg: RunConfig, workdir: str | os.PathLike, *, quiet: bool = False,
          on_log: Optional[Callable[[dict], None]] = None) -> RunResult:
    """Trains (or resumes) the run in `workdir` to `cfg.train.steps`; evaluates and samples.

    `on_log(record)` (process 0 only) gets each logged record as it is written to metrics.jsonl:
    step records (loss, learning_rate, tokens_per_sec, mfu, eval_* at eval steps) and the
    final one (`event: final`), e.g. to draw a live loss curve in a notebook."""
    t_start = time.time()
    workdir = pathlib.Path(workdir)
    distributed = sharding.initialize_distributed(cfg.distributed)  # before any device is touched
    main = jax.process_index() == 0
    show = main and not quiet
    log = lambda msg: metrics_lib.log(msg, show)  # noqa: E731

    _prepare_workdir(workdir)
    ckpt_dir = workdir / "checkpoints"
    resuming = (workdir / CONFIG_FILE).exists() and ckpt_dir.exists() and any(ckpt_dir.iterdir())
    if resuming:
        _check_resume_compatible(cfg, workdir / CONFIG_FILE)
    elif (workdir / "params").is_dir() and not cfg.train.init_from:  # made by `jaxlm convert`
        raise JaxlmError(f"{workdir} holds imported weights (params/): set "
                         f"train.init_from={workdir} to train from them, or use a new --workdir")

    d, t = cfg.data, cfg.train
    objective = cfg.model.objective
    if objective == "classify":  # (text, label) rows; see jaxlm.data.labelled
        rows_data = labelled.load_labelled(
            d.corpus, num_labels=cfg.model.num_labels, text_key=d.text_key,
            label_key=d.label_key, train_split=d.train_split, eval_split=d.eval_split,
            validation_fraction=d.validation_fraction, seed=d.seed,
            tfds_data_dir=d.tfds_data_dir, tfds_download=d.tfds_download,
        )
        corpus = Corpus(rows_data.name, rows_data.train, rows_data.eval)
    else:
        corpus = load_corpus(
            d.corpus, validation_fraction=d.validation_fraction, text_key=d.text_key,
            train_split=d.train_split, eval_split=d.eval_split, tfds_data_dir=d.tfds_data_dir,
            tfds_download=d.tfds_download, cache_dir=d.cache_dir,
        )
    tokenizer = _tokenizer(cfg, corpus, workdir, log, show)
    if cfg.model.vocab_size is None:
        cfg = config_lib.replace(cfg, **{"model.vocab_size": tokenizer.vocab_size})
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise JaxlmError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens"
        )

    mesh = sharding.make_mesh(cfg.mesh)
    dp = sharding.data_parallel_size(mesh)
    if t.batch_size % (dp * t.grad_accum):
        accum = f" x train.grad_accum={t.grad_accum} microbatches" if t.grad_accum > 1 else ""
        raise JaxlmError(
            f"train.batch_size={t.batch_size} does not divide over the {dp}-way data-parallel "
            f"mesh (mesh.data x mesh.fsdp){accum}"
        )
    warn = lambda msg: metrics_lib.log(msg, main)  # noqa: E731 - shown even when quiet
    platform = jax.devices()[0].platform
    for msg in _config_warnings(cfg, platform):
        warn(f"jaxlm: warning: {msg}")
    tp, vocab = mesh.shape["tensor"], cfg.model.vocab_size
    if tp > 1 and vocab % tp:
        warn(f"jaxlm: warning: model.vocab_size={vocab} does not divide over mesh.tensor={tp}: "
             f"the embedding and output head stay whole on every device; "
             f"model.vocab_size={-(-vocab // (tp * 8)) * tp * 8} would shard them")
    # what the model computes with here (the saved config keeps what was asked for: `auto`s)
    m = dataclasses.replace(cfg.model, dtype=config_lib.compute_dtype(cfg.model.dtype, platform))
    attn_impl = _resolve_attention(m, d.seq_len, platform, warn)
    if attn_impl:
        m = dataclasses.replace(m, attention_impl=attn_impl)
    model = build_model(m)
    optimizer = build_optimizer(cfg.optim, t.steps)
    if t.freeze_backbone:  # only the classifier head is trained
        optimizer = _frozen_backbone(optimizer)
    lr_schedule = schedule(cfg.optim, t.steps)
    abstract, shardings = state_shardings(model, optimizer, d.seq_len, mesh)
    mlm = mlm_spec(tokenizer, t.mask_prob) if objective == "mlm" else None
    train_step, eval_step = compile_steps(model, optimizer, lr_schedule, shardings, mesh,
                                          grad_accum=t.grad_accum,
                                          debug_nan_steps=t.debug_nan_steps,
                                          objective=objective, mlm=mlm,
                                          num_labels=cfg.model.num_labels)

    rows = sharding.local_rows(mesh, t.batch_size)  # this process's rows of each global batch
    if objective == "classify":
        train_it = labelled.train_iterator(
            rows_data.train, rows_data.train_labels, tokenizer, seq_len=d.seq_len,
            global_batch=t.batch_size, seed=d.seed, local_rows=rows,
        )
    else:
        train_it = pipeline.train_iterator(
            corpus.train, tokenizer, seq_len=d.seq_len, global_batch=t.batch_size, seed=d.seed,
            shuffle_window=d.shuffle_window, local_rows=rows,
        )
    batch_sh = sharding.batch_sharding(mesh)
    rows_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))

    def put(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows -> global (batch_size, seq_len) arrays sharded over the mesh."""
        return {k: jax.make_array_from_process_local_data(
                    batch_sh if v.ndim > 1 else rows_sh, v, (t.batch_size,) + v.shape[1:])
                for k, v in batch.items()}

    def eval_batches(n: int):
        if objective == "classify":
            return labelled.eval_batches(rows_data.eval, rows_data.eval_labels, tokenizer,
                                         seq_len=d.seq_len, global_batch=t.batch_size,
                                         max_batches=n, local_rows=rows)
        return pipeline.eval_batches(corpus.eval, tokenizer, seq_len=d.seq_len,
                                     global_batch=t.batch_size, max_batches=n, local_rows=rows)

    def eval_bar(n: int):
        """A bar for an eval of n batches (0: the whole split, of unknown length: no ETA)."""
        return metrics_lib.progress(n or None, desc="eval", unit="batch", leave=False) \
            if show else None

    token_bytes = jax.device_put(tokenizer.token_bytes().astype(np.float32),
                                 sharding.replicated(mesh))
    # batches go to the devices t.prefetch steps ahead; checkpoints hold the position of the
    # next batch trained on, so resuming is exact
    batches = DevicePrefetcher(train_it, put, t.prefetch)
    ckpt = Checkpointer(ckpt_dir, keep=t.keep_checkpoints)
    # the newest whole checkpoint (damaged newer ones are reported and moved aside; if all are
    # damaged this raises before anything in the run directory is touched)
    restored = ckpt.restore_latest(abstract, shardings, batches, log=warn)
    if main:
        (workdir / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
        tokenizer.save(workdir)
    if restored is not None:
        state, start_step = restored.state, restored.step
        skipped = int(restored.meta.get("skipped_steps", 0))
        log(f"resuming {workdir} from the checkpoint at step {start_step}")
    else:
        if resuming:
            warn(f"jaxlm: no complete checkpoint in {ckpt_dir}; starting from step 0")
        state, _ = init_state(model, optimizer, seed=t.seed, seq_len=d.seq_len, mesh=mesh)
        if t.init_from:
            state = _init_from(t.init_from, cfg.model, state, optimizer, shardings, log)
        start_step, skipped = 0, 0
    # opened once the state is there (a failed --init_from leaves no TensorBoard writer behind:
    # its thread, never closed, fails at interpreter exit on Python 3.12)
    writer = metrics_lib.MetricsWriter(workdir, enabled=main)
    writer.truncate_after(start_step)  # step records past the checkpoint are about to be redone

    total_params, non_embed = flops.param_counts(state.params)
    fpt = flops.flops_per_token(cfg.model, non_embed, d.seq_len)
    model_fpt = flops.model_flops_per_token(cfg.model, non_embed, d.seq_len)
    peak, peak_source = flops.system_peak(jax.devices(), m.dtype, t.peak_flops)
    header = {
        "event": "start", "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "platform": jax.devices()[0].platform, "processes": jax.process_count(),
        "distributed": distributed or "single process", "mesh": dict(mesh.shape),
        "rules": sharding.rules_summary(), "family": m.family, "params": total_params,
        "params_non_embedding": non_embed, "flops_per_token": fpt,
        "model_flops_per_token": model_fpt, "peak_flops": peak, "peak_flops_source": peak_source,
        "compute_dtype": m.dtype, "param_dtype": m.param_dtype,
        "attention": attn_impl or "none (recurrent)",
        "remat": m.remat, "scan_layers": m.scan_layers, "grad_accum": t.grad_accum,
        "batch_size": t.batch_size, "seq_len": d.seq_len, "vocab_size": m.vocab_size,
        "objective": m.objective,
        "corpus": corpus.name, "train_docs": len(corpus.train), "eval_docs": len(corpus.eval),
        "start_step": start_step, "prefetch": t.prefetch,
    }
    writer.write(header)
    log(f"jaxlm: {m.family} with {total_params:,} params ({non_embed:,} non-embedding) on "
        f"{header['devices']} ({header['distributed']}), mesh {dict(mesh.shape)}; "
        f"{m.dtype} compute / {m.param_dtype} params, attention {header['attention']}, "
        f"remat {m.remat}{', scanned layers' if m.scan_layers else ''}"
        f"{f', {t.grad_accum} microbatches' if t.grad_accum > 1 else ''}; "
        f"{corpus.name}: {len(corpus.train)} train / {len(corpus.eval)} eval docs; "
        f"vocab {m.vocab_size}; workdir {workdir}")

    tokens_per_step = t.batch_size * d.seq_len
    bar = metrics_lib.progress(t.steps, initial=start_step, enabled=show)
    pending: Optional[tuple[int, Any, bool]] = None
    last_log = (time.time(), start_step)
    rate = 0.0
    last_saved = start_step if start_step else None
    last_eval: tuple[int, Optional[float]] = (-1, None)  # (step, periodic eval loss there)
    nonfinite: list[tuple[int, Any]] = []  # (step, device flag) not yet fetched
    config_dict = config_lib.to_dict(cfg)

    def drain(upto: int) -> None:
        """Fetches the non-finite flags of steps <= upto: counts skipped updates, or halts."""
        nonlocal skipped
        ready = [(s, f) for s, f in nonfinite if s <= upto]
        if not ready:
            return
        del nonfinite[:len(ready)]
        bad = [s for (s, _), f in zip(ready, jax.device_get([f for _, f in ready])) if int(f)]
        if not bad:
            return
        skipped += len(bad)
        if t.nonfinite == "halt":
            writer.write({"event": "halted", "step": bad[0]})
            newest = ckpt.step_path(last_saved) if last_saved else "none"
            raise NonFiniteError(
                f"non-finite loss or gradient norm at step {bad[0]}; halting "
                f"(train.nonfinite=halt). Newest checkpoint: {newest}; "
                f"train.nonfinite=skip skips such updates instead"
            )
        for s in bad:
            warn(f"jaxlm: warning: non-finite loss or gradient norm at step {s}; update skipped "
                 f"({skipped} skipped so far)")

    def save(step: int) -> None:
        nonlocal last_saved
        drain(step)  # halts first in halt mode; the counter saved is exact
        ckpt.save(step, state, batches, meta={"skipped_steps": skipped}, config=config_dict,
                  eval_loss=last_eval[1] if last_eval[0] == step else None)
        last_saved = step

    def flush(step: int, metrics: Any, do_eval: bool) -> None:
        nonlocal last_log, rate, last_eval
        drain(step)
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        steps_done = step - last_log[1]
        step_time = max(now - last_log[0], 1e-9) / max(steps_done, 1)
        rate = tokens_per_step / step_time
        last_log = (now, step)
        record = {"step": step, "loss": m["loss"], "learning_rate": m["learning_rate"],
                  "grad_norm": m["grad_norm"], "tokens_per_sec": rate, "step_time_sec": step_time,
                  "mfu": flops.mfu(rate, model_fpt, peak),
                  "tokens_seen": step * tokens_per_step, "skipped_steps": skipped}
        if do_eval:
            record.update(evaluate(eval_step, state.params, eval_batches(t.eval_batches),
                                   token_bytes, put, bar=eval_bar(t.eval_batches)))
            last_log = (time.time(), step)  # eval time is not training throughput
            last_eval = (step, record["eval_loss"])
        writer.write(record)
        if on_log is not None and main:
            on_log(record)
        post = {"loss": f"{m['loss']:.3f}", "tok/s": f"{rate:,.0f}",
                "mfu": f"{100 * record['mfu']:.1f}%"}
        if do_eval:
            key = "eval_bpb" if "eval_bpb" in record and objective == "clm" else "eval_accuracy"
            post[key] = f"{record[key]:.3f}"
        bar.set_postfix(post, refresh=False)

    stop = StopSignals(log=warn)
    stopped: Optional[str] = None  # the signal that stopped training

    def stop_now(step: int) -> bool:
        """Whether to stop after `step`. Processes of a multi-host run must stop at the same
        step, so they agree at log steps (one tiny all-gather) rather than each on its own."""
        if jax.process_count() == 1:
            return stop.requested is not None
        if step % t.log_every and step != t.steps:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(stop.requested is not None))
        return bool(np.any(flags))

    try:
        with stop:  # SIGTERM/SIGINT: finish the step, checkpoint it, stop
            for step in range(start_step + 1, t.steps + 1):
                batch = next(batches)
                if step == start_step + 1:
                    t0 = time.time()
                    state, metrics = train_step(state, batch)
                    jax.block_until_ready(metrics)
                    compile_time = time.time() - t0
                    writer.write({"event": "compiled", "step": step,
                                  "compile_time_sec": compile_time})
                    log(f"compiled the train step in {compile_time:.1f} s (with its first step); "
                        f"MFU against {peak / 1e12:.3g} TFLOP/s ({peak_source})")
                    last_log = (time.time(), step)
                else:
                    state, metrics = train_step(state, batch)
                nonfinite.append((step, metrics["nonfinite"]))
                if t.nonfinite == "halt":  # step t is dispatched: check step t-1
                    drain(step - 1)
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
                    save(step)
                bar.update(1)
                if stop_now(step):
                    stopped = stop.requested or "a signal to another process"
                    break
            if pending is not None:
                flush(*pending)
            final_step = int(jax.device_get(state.step))
            drain(final_step)
            if last_saved != final_step:
                save(final_step)
            ckpt.wait()  # committed: a signal from here on loses nothing
        bar.close()
        if stopped is None and stop.requested and jax.process_count() == 1:
            stopped = stop.requested  # arrived after the last step: stop before evaluating
        if stopped:
            ckpt.close()
            writer.write({"event": "preempted", "step": final_step, "signal": stopped,
                          "skipped_steps": skipped})
            warn(f"jaxlm: stopped by {stopped} at step {final_step} of {t.steps}; "
                 f"checkpoint {ckpt.step_path(final_step)} is saved. To resume, run the same "
                 f"command again (or jaxlm.train with the same config and workdir)")
            return RunResult(workdir, cfg, final_step, {}, [], time.time() - t_start, rate,
                             state.params, preempted=True, skipped_steps=skipped)
        log(f"evaluating at step {final_step} on "
            f"{t.final_eval_batches or 'all'} eval batches of {t.batch_size}x{d.seq_len} tokens")
        final_eval = evaluate(eval_step, state.params, eval_batches(t.final_eval_batches),
                              token_bytes, put, bar=eval_bar(t.final_eval_batches))
        train_rate = rate
        final_record = {"event": "final", "step": final_step, **final_eval,
                        "tokens_per_sec": train_rate, "mfu": flops.mfu(train_rate, model_fpt, peak),
                        "skipped_steps": skipped, "wall_time_sec": time.time() - t_start}
        writer.write(final_record)
        if on_log is not None and main:
            on_log(final_record)
        samples = _samples(cfg, model, state.params, tokenizer) if objective == "clm" else []
        if main:
            (workdir / SAMPLES_FILE).write_text(
                "".join(f"--- sample {i + 1} ---\n{s}\n" for i, s in enumerate(samples))
            )
        ckpt.close()
    except Exception:
        try:  # let a save in flight commit; the error being raised is the one to report
            ckpt.close()
        except Exception:  # noqa: BLE001
            pass
        raise
    finally:
        bar.close()
        writer.close()
    return RunResult(workdir, cfg, final_step, final_eval, samples, time.time() - t_start,
                     train_rate, state.params, skipped_steps=skipped,
                     mfu=flops.mfu(train_rate, model_fpt, peak))


def _config_warnings(cfg: RunConfig, platform: str) -> list[str]:
    """Settings that are valid but probably not what was meant."""
    m, out = cfg.model, []
    if platform == "cpu" and m.dtype not in ("auto", "float32"):
        out.append(f"model.dtype={m.dtype} on CPU is emulated and slower than float32")
    if platform in ("gpu", "tpu") and m.dtype == "float32" and m.family == "transformer":
        out.append(f"model.dtype=float32 on {platform.upper()}: bfloat16 compute (float32 "
                   f"params stay) is usually 2-4x faster; set model.dtype=bfloat16")
    if m.family == "transformer" and cfg.data.seq_len < m.max_seq_len // 4:
        out.append(f"data.seq_len={cfg.data.seq_len} uses under a quarter of "
                   f"model.max_seq_len={m.max_seq_len}; the unused positions are never trained")
    return out


def _resolve_attention(m: config_lib.ModelConfig, seq_len: int, platform: str,
                       warn) -> Optional[str]:
    """The attention kernel this run uses (None for the LSTM); warns when a fast one is not."""
    if m.family != "transformer":
        return None
    impl, warning = attention.resolve(
        m.attention_impl, platform=platform, dtype=m.dtype, n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads or m.n_heads, head_dim=m.d_model // m.n_heads, seq_len=seq_len,
        causal=is_causal(m))
    if warning:
        warn(warning)
    return impl


def _init_from(source: str, model_cfg, state, optimizer, shardings, log):
    """Fine-tuning: the fresh state with imported params (checked against the model, placed
    with the state's shardings) and an optimizer state initialized from them."""
    from jaxlm.interop import load_init_params

    params = jax.device_put(load_init_params(source, model_cfg, like=state.params,
                                             fresh=("classifier",)),
                            shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    log(f"initialized the parameters from {source}")
    return state.replace(params=params, opt_state=opt_state)


def _frozen_backbone(optimizer):
    """`optimizer` whose updates (weight decay included) reach the classifier head only: every
    other parameter stays exactly as it is. (The optimizer state keeps its full shape, so the
    state's shardings and checkpoints are those of the unfrozen run.)"""
    import optax

    def update(grads, state, params=None):
        updates, state = optimizer.update(grads, state, params)
        return {k: v if k == "classifier" else jax.tree.map(jax.numpy.zeros_like, v)
                for k, v in updates.items()}, state

    return optax.GradientTransformation(optimizer.init, update)


def _samples(cfg: RunConfig, model, params, tokenizer: Tokenizer) -> list[str]:
    t = cfg.train
    if not t.samples:
        return []
    prompt = [int(i) for i in tokenizer.encode(t.sample_prompt)] or [tokenizer.eos_id]
    m = cfg.model
    prompt = prompt[-(m.max_seq_len - 1):] if m.family == "transformer" else prompt
    new = t.sample_tokens if m.family != "transformer" else min(
        t.sample_tokens, m.max_seq_len - len(prompt))
    out = generate(model, params, prompt, max_new_tokens=new, num_return_sequences=t.samples,
                   temperature=t.sample_temperature, eos_id=tokenizer.eos_id,
                   pad_id=tokenizer.pad_id, seed=t.seed)
    return [tokenizer.decode(s) for s in out.sequences]
