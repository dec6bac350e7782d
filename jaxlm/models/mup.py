"""μP (maximal update parametrization, Tensor Programs V) for the Transformer, relative to a base
width: `model.mup_base_width` = the d_model at which μP equals the standard parametrization.

With width multiplier m = d_model / mup_base_width (Adam-style rules, as the `mup` package's
MuReadout + MuAdam; TP5 Table 3 up to the output multiplier reparametrization):
- embeddings (token, position), biases and norm scales: init and learning rate unchanged;
- hidden matrices (attention q/k/v/out, MLP): init std / sqrt(m), learning rate / m
  (the learning rates: `jaxlm.train.param_groups`);
- output logits (tied or untied head) multiplied by 1/m; head init and learning rate unchanged;
- attention logits scaled 1/head_dim instead of 1/sqrt(head_dim): sqrt(base_head_dim)/head_dim,
  so 1/sqrt(head_dim) at the base width. Widening keeps n_heads and grows head_dim.
With `mup_base_width` unset every factor here is exactly 1 (the model is unchanged).
"""

from __future__ import annotations

import math

from jaxlm.config import ModelConfig


def width_mult(cfg: ModelConfig) -> float:
    """m = d_model / mup_base_width; 1.0 when μP is off."""
    if cfg.mup_base_width is None:
        return 1.0
    return cfg.d_model / cfg.mup_base_width


def hidden_init_scale(cfg: ModelConfig) -> float:
    """Factor on the init std of hidden matrices: 1/sqrt(m) (variance 1/fan_in)."""
    return 1.0 / math.sqrt(width_mult(cfg))


def query_scale(cfg: ModelConfig) -> float:
    """Factor on the queries that turns dot-product attention's 1/sqrt(head_dim) into
    sqrt(base_head_dim)/head_dim: sqrt(base_head_dim / head_dim) = 1/sqrt(m) at fixed n_heads."""
    return 1.0 / math.sqrt(width_mult(cfg))


def output_mult(cfg: ModelConfig) -> float:
    """Factor on the output logits: 1/m."""
    return 1.0 / width_mult(cfg)
