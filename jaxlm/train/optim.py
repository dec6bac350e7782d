"""Optax optimizer + learning-rate schedule from an OptimConfig."""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from jaxlm.config import OptimConfig
from jaxlm.train.param_groups import scale_by_group


def wsd_decay_start(cfg: OptimConfig, total_steps: int) -> int:
    """The step where a `wsd` schedule leaves its constant phase: total_steps minus the decay,
    round(cfg.decay_fraction * total_steps) steps long."""
    return total_steps - round(cfg.decay_fraction * total_steps)


def _one_minus_sqrt(init: float, end: float, steps: int) -> optax.Schedule:
    """end + (init - end) * (1 - sqrt(t / steps)), held at end after `steps` (Hägele et al. 2024)."""
    def fn(count):
        frac = jnp.clip(count / steps, 0.0, 1.0)
        return end + (init - end) * (1.0 - jnp.sqrt(frac))

    return fn


def _decay(cfg: OptimConfig, shape: str, steps: int) -> optax.Schedule:
    end = cfg.lr * cfg.min_lr_ratio
    if shape == "cosine":
        return optax.cosine_decay_schedule(cfg.lr, steps, alpha=cfg.min_lr_ratio)
    if shape == "1-sqrt":
        return _one_minus_sqrt(cfg.lr, end, steps)
    return optax.linear_schedule(cfg.lr, end, steps)


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to cfg.lr, then: cosine / linear decay to min_lr_ratio * lr; constant; or
    wsd (warmup-stable-decay): constant until `wsd_decay_start`, then a decay of shape
    cfg.decay_shape (linear | cosine | 1-sqrt) to min_lr_ratio * lr at total_steps.

    A wsd schedule equals the constant one (same lr and warmup) up to its decay start, so a
    cooldown branch (train.branch_from) of a constant-lr trunk is the run trained with this
    schedule from the start."""
    warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
    pieces, bounds = [], []
    if cfg.warmup_steps > 0:
        pieces, bounds = [warmup], [cfg.warmup_steps]
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule in ("cosine", "linear"):
        pieces.append(_decay(cfg, cfg.schedule, decay_steps))
    elif cfg.schedule == "wsd" and wsd_decay_start(cfg, total_steps) < total_steps:
        start = wsd_decay_start(cfg, total_steps)
        if start > cfg.warmup_steps:
            pieces.append(optax.constant_schedule(cfg.lr))
            bounds.append(start)
        pieces.append(_decay(cfg, cfg.decay_shape, total_steps - start))
    else:
        pieces.append(optax.constant_schedule(cfg.lr))
    if len(pieces) == 1:
        return pieces[0]
    return optax.join_schedules(pieces, bounds)


def _decay_mask(params):
    """Weight decay on matrices only (GPT-2/nanoGPT practice): not on biases, norms, vectors.

    Under `model.scan_layers` the block params (`h`) carry a leading layers axis, which does
    not count: a stacked bias (layers, d) is still a bias.
    """
    def is_matrix(path, p) -> bool:
        stacked = bool(path) and getattr(path[0], "key", None) == "h"
        return p.ndim - int(stacked) >= 2

    return jax.tree_util.tree_map_with_path(is_matrix, params)


def build_optimizer(cfg: OptimConfig, total_steps: int,
                    group_lr: Optional[Mapping[str, float]] = None) -> optax.GradientTransformation:
    """The optax chain of `cfg`; `group_lr`: per-parameter-group learning-rate factors
    (`jaxlm.train.param_groups.lr_multipliers`, e.g. μP), None: all 1."""
    lr = schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                          weight_decay=cfg.weight_decay, mask=_decay_mask)
    elif cfg.name == "lion":
        opt = optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_decay_mask)
    elif cfg.name == "adafactor":
        # Composed by hand: optax.adafactor adds weight decay after the lr scale, so a decay of
        # 0.1 would shrink every matrix by 10% per step. Here decay is lr-scaled, as in AdamW.
        opt = optax.chain(
            optax.scale_by_factored_rms(),
            optax.clip_by_block_rms(1.0),
            optax.add_decayed_weights(cfg.weight_decay, _decay_mask),
            optax.scale_by_learning_rate(lr),
        )
    elif cfg.name == "sgd":
        opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay, _decay_mask),
                          optax.sgd(lr, momentum=cfg.momentum))
    else:
        raise ValueError(f"unknown optimizer {cfg.name}")  # validate() rules this out
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    if group_lr:
        opt = scale_by_group(opt, group_lr)
    return opt


def frozen_backbone(optimizer: optax.GradientTransformation, trainable: str = "classifier"
                    ) -> optax.GradientTransformation:
    """`optimizer` whose updates (weight decay included) reach the `trainable` top-level entry
    only: every other parameter stays exactly as it is. (The optimizer state keeps its full
    shape, so the state's shardings and checkpoints are those of the unfrozen run.)"""

    def update(grads, state, params=None):
        updates, state = optimizer.update(grads, state, params)
        return {k: v if k == trainable else jax.tree.map(jax.numpy.zeros_like, v)
                for k, v in updates.items()}, state

    return optax.GradientTransformation(optimizer.init, update)
