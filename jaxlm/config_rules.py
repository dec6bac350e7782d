"""The config's enumerations, each defined once (validation, the models, sweeps and the docs
generator import them), its cross-field rules (`validate`), and the warnings about settings that
are valid but probably not what was meant (`config_warnings`). Pure: no I/O."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Sequence

from jaxlm.errors import JaxlmError

if TYPE_CHECKING:
    from jaxlm.config import ModelConfig, RunConfig

FAMILIES = ("transformer", "lstm")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash", "blockwise")  # models/attention.py
REMAT_POLICIES = ("none", "full", "dots_saveable")
OBJECTIVES = ("clm", "mlm", "classify")
POOLINGS = ("auto", "last", "first", "mean")
TOKENIZERS = ("byte", "sentencepiece", "hf")
INPUT_MODES = ("per_host", "global")  # data.input: jaxlm/data/hosts.py
SP_MODEL_TYPES = ("bpe", "unigram")
OPTIMIZERS = ("adamw", "adafactor", "lion", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")  # optim.schedule=wsd


def _choice(key: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise JaxlmError(f"config key '{key}' must be one of {', '.join(options)}; got '{value}'")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise JaxlmError(f"config key '{key}' must be {bound}; got {value}")


def _finite(cfg: RunConfig) -> None:
    """Every float in the config is a number (OmegaConf parses `nan` and `inf` as floats, and
    NaN passes every `<` / `>` check after this)."""
    for section in dataclasses.fields(cfg):
        sub = getattr(cfg, section.name)
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise JaxlmError(f"config key '{section.name}.{f.name}' must be a finite number; "
                                 f"got {v}")


def _embed_dim(m) -> None:
    _positive("model.embed_dim", m.embed_dim)
    if m.family != "lstm":
        raise JaxlmError("config key 'model.embed_dim' applies to the lstm family only (a "
                         "transformer's embedding width is model.d_model)")
    if m.tie_embeddings and m.embed_dim != m.d_model:
        raise JaxlmError(f"model.embed_dim={m.embed_dim} differs from model.d_model={m.d_model}: "
                         "a tied output layer needs them equal; set model.tie_embeddings=false")


def validate(cfg: RunConfig) -> None:
    """Cross-field checks; raises JaxlmError naming the first offending key."""
    _finite(cfg)
    m, d, t = cfg.model, cfg.data, cfg.train
    _choice("model.family", m.family, FAMILIES)
    _choice("model.position", m.position, POSITIONS)
    _choice("model.norm", m.norm, NORMS)
    _choice("model.mlp", m.mlp, MLPS)
    _choice("model.dtype", m.dtype, ("auto", *DTYPES))
    _choice("model.param_dtype", m.param_dtype, DTYPES)
    _choice("model.attention_impl", m.attention_impl, ATTENTION_IMPLS)
    _choice("model.remat", m.remat, REMAT_POLICIES)
    _choice("model.objective", m.objective, OBJECTIVES)
    _choice("model.pooling", m.pooling, POOLINGS)
    if m.objective != "clm" and m.family != "transformer":
        raise JaxlmError(f"model.objective={m.objective} needs model.family=transformer")
    if m.objective == "mlm" and m.causal:
        raise JaxlmError("model.objective=mlm needs a bidirectional encoder: unset model.causal")
    if m.num_labels < 2:
        raise JaxlmError(f"config key 'model.num_labels' must be >= 2; got {m.num_labels}")
    if not 0.0 < t.mask_prob < 1.0:
        raise JaxlmError(f"config key 'train.mask_prob' must be in (0, 1); got {t.mask_prob}")
    if t.freeze_backbone and m.objective != "classify":
        raise JaxlmError("train.freeze_backbone applies to model.objective=classify only")
    if t.prefetch < 0:
        raise JaxlmError(f"config key 'train.prefetch' must be >= 0; got {t.prefetch}")
    if t.peak_flops is not None and t.peak_flops <= 0:
        raise JaxlmError(f"config key 'train.peak_flops' must be > 0 (FLOP/s of one device); "
                         f"got {t.peak_flops}")
    if m.scan_layers and m.family != "transformer":
        raise JaxlmError("config key 'model.scan_layers' applies to the transformer family only")
    for key in ("d_model", "n_layers", "n_heads", "max_seq_len", "rope_theta", "norm_eps"):
        _positive(f"model.{key}", getattr(m, key))
    if m.embed_dim is not None:
        _embed_dim(m)
    for key in ("vocab_size", "n_kv_heads", "d_ff"):
        if getattr(m, key) is not None:
            _positive(f"model.{key}", getattr(m, key))
    _positive("model.init_std", m.init_std)
    if not 0.0 <= m.dropout < 1.0:
        raise JaxlmError(f"config key 'model.dropout' must be in [0, 1); got {m.dropout}")
    if m.family == "transformer":
        if m.d_model % m.n_heads:
            raise JaxlmError(
                f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}"
            )
        kv = m.n_kv_heads or m.n_heads
        if m.n_heads % kv:
            raise JaxlmError(
                f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={kv}"
            )
        if m.position == "rope" and (m.d_model // m.n_heads) % 2:
            raise JaxlmError(
                f"model.position=rope needs an even head size; d_model/n_heads = "
                f"{m.d_model // m.n_heads}"
            )
    if d.seq_len > m.max_seq_len:
        raise JaxlmError(
            f"data.seq_len={d.seq_len} is longer than the model's maximum, "
            f"model.max_seq_len={m.max_seq_len}"
        )
    _validate_mup(cfg)
    _validate_data_optim_train(cfg)


def _validate_mup(cfg: RunConfig) -> None:
    m = cfg.model
    if m.mup_base_width is None:
        return
    _positive("model.mup_base_width", m.mup_base_width)
    if m.family != "transformer":
        raise JaxlmError(f"config key 'model.mup_base_width' applies to the transformer family "
                         f"only (model.family={m.family}); see docs/mup.md")
    if cfg.optim.name == "sgd":
        raise JaxlmError("config key 'model.mup_base_width' needs an Adam-style optimizer "
                         "(optim.name=adamw, lion or adafactor), not optim.name=sgd")
    if m.mup_base_width % m.n_heads:
        raise JaxlmError(f"model.mup_base_width={m.mup_base_width} is not divisible by "
                         f"model.n_heads={m.n_heads} (μP widens each head)")


def _validate_data_optim_train(cfg: RunConfig) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train
    if not d.corpus:
        raise JaxlmError("config key 'data.corpus' is empty")
    _choice("data.tokenizer", d.tokenizer, TOKENIZERS)
    _choice("data.sp_model_type", d.sp_model_type, SP_MODEL_TYPES)
    if d.tokenizer == "hf" and not d.hf_tokenizer and not t.init_from:
        raise JaxlmError("data.tokenizer=hf needs data.hf_tokenizer=DIR (a folder with "
                         "tokenizer.json, or vocab.json + merges.txt)")
    _positive("data.seq_len", d.seq_len)
    _positive("data.sp_vocab_size", d.sp_vocab_size)
    _positive("data.sp_train_chars", d.sp_train_chars)
    _positive("data.shuffle_window", d.shuffle_window, allow_zero=True)
    _choice("data.input", d.input, INPUT_MODES)
    if not 0.0 < d.validation_fraction < 1.0:
        raise JaxlmError(
            f"config key 'data.validation_fraction' must be in (0, 1); got {d.validation_fraction}"
        )

    _choice("optim.name", o.name, OPTIMIZERS)
    _choice("optim.schedule", o.schedule, SCHEDULES)
    _positive("optim.lr", o.lr)
    _positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    _positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _positive("optim.grad_clip", o.grad_clip, allow_zero=True)
    _positive("optim.eps", o.eps)
    for key in ("b1", "b2", "momentum"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise JaxlmError(f"config key 'optim.{key}' must be in [0, 1); got {getattr(o, key)}")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise JaxlmError(f"config key 'optim.min_lr_ratio' must be in [0, 1]; got {o.min_lr_ratio}")
    if o.warmup_steps >= t.steps:
        raise JaxlmError(
            f"optim.warmup_steps={o.warmup_steps} must be smaller than train.steps={t.steps}"
        )
    _validate_wsd(cfg)

    for key in ("steps", "batch_size", "log_every", "keep_checkpoints", "sample_tokens",
                "grad_accum"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("eval_every", "eval_batches", "final_eval_batches", "checkpoint_every", "samples"):
        _positive(f"train.{key}", getattr(t, key), allow_zero=True)
    _positive("train.sample_temperature", t.sample_temperature, allow_zero=True)
    _positive("train.checkpoint_every_minutes", t.checkpoint_every_minutes, allow_zero=True)
    _choice("train.nonfinite", t.nonfinite, ("skip", "halt"))
    _positive("train.nonfinite_patience", t.nonfinite_patience, allow_zero=True)
    if any(s < 1 for s in t.checkpoint_at):
        raise JaxlmError(f"config key 'train.checkpoint_at' lists a step < 1: {t.checkpoint_at}")
    for s in t.debug_nan_steps:
        if s < 1:
            raise JaxlmError(
                f"config key 'train.debug_nan_steps' lists step {s}; steps count from 1")
    if t.batch_size % t.grad_accum:
        raise JaxlmError(
            f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}"
        )

    for key in ("data", "fsdp", "context", "tensor", "dcn_data", "dcn_fsdp"):
        v = getattr(cfg.mesh, key)
        if v == 0 or v < -1:
            raise JaxlmError(f"config key 'mesh.{key}' must be a positive size or -1; got {v}")

    dist = cfg.distributed
    given = [k for k in ("coordinator_address", "num_processes", "process_id")
             if getattr(dist, k) is not None]
    if given and len(given) < 3:
        missing = sorted({"coordinator_address", "num_processes", "process_id"} - set(given))
        raise JaxlmError(
            f"distributed.{given[0]} is set but {', '.join('distributed.' + k for k in missing)} "
            f"is not: set all three, or none to auto-detect"
        )
    if dist.num_processes is not None:
        _positive("distributed.num_processes", dist.num_processes)
        if not 0 <= dist.process_id < dist.num_processes:
            raise JaxlmError(
                f"distributed.process_id={dist.process_id} must be in [0, "
                f"distributed.num_processes={dist.num_processes})"
            )
    _positive("distributed.initialization_timeout", dist.initialization_timeout)


def _validate_wsd(cfg: RunConfig) -> None:
    o, t = cfg.optim, cfg.train
    _choice("optim.decay_shape", o.decay_shape, DECAY_SHAPES)
    if not 0.0 <= o.decay_fraction <= 1.0:
        raise JaxlmError(f"config key 'optim.decay_fraction' must be in [0, 1]; got "
                         f"{o.decay_fraction}")
    decay = round(o.decay_fraction * t.steps)
    if o.schedule == "wsd" and t.steps - decay < o.warmup_steps:
        raise JaxlmError(f"optim.decay_fraction={o.decay_fraction} decays over {decay} of "
                         f"train.steps={t.steps}, into the optim.warmup_steps={o.warmup_steps} "
                         f"warmup")
    if t.branch_from is not None:
        run, sep, step = t.branch_from.rpartition("@")
        if not sep or not run or not step.isdigit() or int(step) < 1:
            raise JaxlmError(f"config key 'train.branch_from' must be RUN_DIR@STEP (a step >= 1"
                             f"); got {t.branch_from!r}")
        if int(step) >= t.steps:
            raise JaxlmError(f"train.branch_from={t.branch_from} starts at step {step}, not "
                             f"before train.steps={t.steps}")
        if t.init_from:
            raise JaxlmError("train.branch_from and train.init_from are both set: a branch "
                             "starts from its trunk's checkpoint; unset one")


def compute_dtype(dtype: str, platform: str) -> str:
    """model.dtype with `auto` resolved: bfloat16 on accelerators (float32 params stay the master
    weights), float32 on CPU, where bfloat16 is emulated and slower."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if platform in ("gpu", "tpu") else "float32"


def is_causal(m: ModelConfig) -> bool:
    """Whether the model attends causally: `model.causal`, or by objective when unset."""
    return m.causal if m.causal is not None else m.objective != "mlm"


def pooling(m: ModelConfig) -> str:
    """The classifier's pooling: `model.pooling`, or last (causal) / mean (encoder) for auto."""
    if m.pooling != "auto":
        return m.pooling
    return "last" if is_causal(m) else "mean"


def config_warnings(cfg: RunConfig, platform: str, tensor_parallel: int = 1) -> list[str]:
    """Settings that are valid but probably not what was meant, on this platform and mesh."""
    m, out = cfg.model, []
    if platform == "cpu" and m.dtype not in ("auto", "float32"):
        out.append(f"model.dtype={m.dtype} on CPU is emulated and slower than float32")
    if platform in ("gpu", "tpu") and m.dtype == "float32" and m.family == "transformer":
        out.append(f"model.dtype=float32 on {platform.upper()}: bfloat16 compute (float32 "
                   f"params stay) is usually 2-4x faster; set model.dtype=bfloat16")
    if m.family == "transformer" and cfg.data.seq_len < m.max_seq_len // 4:
        out.append(f"data.seq_len={cfg.data.seq_len} uses under a quarter of "
                   f"model.max_seq_len={m.max_seq_len}; the unused positions are never trained")
    tp, vocab = tensor_parallel, m.vocab_size
    if tp > 1 and vocab and vocab % tp:
        out.append(f"model.vocab_size={vocab} does not divide over mesh.tensor={tp}: the "
                   f"embedding and output head stay whole on every device; "
                   f"model.vocab_size={-(-vocab // (tp * 8)) * tp * 8} would shard them")
    return out
