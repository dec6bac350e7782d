"""The assembly training and evaluation share: a config, a mesh and a tokenizer -> the model
as it computes here (compute dtype and attention kernel resolved for this platform), the
optimizer and schedule, the abstract state and its shardings, and the jitted steps."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh

from jaxlm import config as config_lib, sharding
from jaxlm.config import ModelConfig, RunConfig, is_causal
from jaxlm.data.tokenizers import Tokenizer
from jaxlm.errors import JaxlmError
from jaxlm.models import attention, build_model
from jaxlm.train.optim import build_optimizer, frozen_backbone, schedule
from jaxlm.train.param_groups import lr_multipliers
from jaxlm.train.state import state_shardings
from jaxlm.train.step import MlmSpec, compile_steps


@dataclasses.dataclass(frozen=True)
class Assembly:
    model_config: ModelConfig  # as computed with here: dtype and attention_impl resolved
    model: nn.Module
    optimizer: optax.GradientTransformation
    lr_schedule: optax.Schedule
    abstract: Any  # the TrainState's shapes (the restore target)
    shardings: Any  # the TrainState's shardings
    train_step: Callable
    eval_step: Callable
    attention: Optional[str]  # the kernel that runs (None: recurrent)


def mlm_spec(tokenizer: Tokenizer, mask_prob: float) -> MlmSpec:
    mask_id = getattr(tokenizer, "mask_id", None)
    if mask_id is None:
        raise JaxlmError("model.objective=mlm needs a tokenizer with a mask token")
    # random replacements: any ordinary token (the specials pad/eos/mask/unk are ids < 3)
    return MlmSpec(int(mask_id), 3, int(tokenizer.vocab_size), float(mask_prob))


def resolve_attention(m: ModelConfig, seq_len: int, platform: str,
                      warn: Callable[[str], None], context: int = 1) -> Optional[str]:
    """The attention kernel this run uses (None for the LSTM); warns when a fast one is not."""
    if m.family != "transformer":
        return None
    impl, warning = attention.resolve(
        m.attention_impl, platform=platform, dtype=m.dtype, n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads or m.n_heads, head_dim=m.d_model // m.n_heads, seq_len=seq_len,
        causal=is_causal(m), context=context)
    if warning:
        warn(warning)
    return impl


def assemble(cfg: RunConfig, mesh: Mesh, tokenizer: Tokenizer,
             warn: Callable[[str], None] = lambda msg: None) -> Assembly:
    """Everything a run computes with (`cfg.model.vocab_size` resolved); nothing is run or
    allocated beyond compiling the attention probe."""
    t = cfg.train
    platform = jax.devices()[0].platform
    m = dataclasses.replace(cfg.model, dtype=config_lib.compute_dtype(cfg.model.dtype, platform))
    attn = resolve_attention(m, cfg.data.seq_len, platform, warn,
                             context=sharding.context_parallel_size(mesh))
    if attn:
        m = dataclasses.replace(m, attention_impl=attn)
    model = build_model(m)
    optimizer = build_optimizer(cfg.optim, t.steps, group_lr=lr_multipliers(m))
    if t.freeze_backbone:  # only the classifier head is trained
        optimizer = frozen_backbone(optimizer)
    lr_schedule = schedule(cfg.optim, t.steps)
    abstract, shardings = state_shardings(model, optimizer, cfg.data.seq_len, mesh)
    mlm = mlm_spec(tokenizer, t.mask_prob) if m.objective == "mlm" else None
    train_step, eval_step = compile_steps(model, optimizer, lr_schedule, shardings, mesh,
                                          grad_accum=t.grad_accum,
                                          debug_nan_steps=t.debug_nan_steps,
                                          objective=m.objective, mlm=mlm,
                                          num_labels=m.num_labels)
    return Assembly(m, model, optimizer, lr_schedule, abstract, shardings, train_step,
                    eval_step, attn)
