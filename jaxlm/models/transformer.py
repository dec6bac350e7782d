"""Decoder-only Transformer: the GPT-2 layout by default, with modern options.

GPT-2: learned positions, pre-LayerNorm blocks, GELU MLP (4x), biases, tied embeddings,
N(0, 0.02) init with residual projections scaled by 1/sqrt(2 * n_layers), a final LayerNorm.
Options: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied embeddings, no biases.
Attention-probability dropout is not applied (dot_product_attention has none); dropout acts on
the embeddings and on each residual branch.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.config import ModelConfig
from jaxlm.models.layers import Attention, Mlp, Norm, dtype_of, normal


def mlp_width(cfg: ModelConfig) -> int:
    """d_ff when unset: 4*d (GELU); for SwiGLU 8/3*d rounded up to a multiple of 64 (LLaMA)."""
    if cfg.d_ff is not None:
        return cfg.d_ff
    if cfg.mlp == "swiglu":
        return int(math.ceil(8 * cfg.d_model / 3 / 64) * 64)
    return 4 * cfg.d_model


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_btd: jax.Array, positions_bt: jax.Array, deterministic: bool) -> jax.Array:
        c = self.cfg
        dtype, pdtype = dtype_of(c.dtype), dtype_of(c.param_dtype)
        out_std = c.init_std / math.sqrt(2 * c.n_layers)
        norm = lambda name: Norm(c.norm, c.norm_eps, c.use_bias, dtype, pdtype, name=name)  # noqa: E731
        impl = None if c.attention_impl == "auto" else c.attention_impl
        h = Attention(
            n_heads=c.n_heads, n_kv_heads=c.n_kv_heads or c.n_heads,
            head_dim=c.d_model // c.n_heads, use_bias=c.use_bias,
            use_rope=c.position == "rope", rope_theta=c.rope_theta, init_std=c.init_std,
            out_init_std=out_std, dtype=dtype, param_dtype=pdtype, implementation=impl,
            name="attn",
        )(norm("ln_1")(x_btd), positions_bt)
        x_btd = x_btd + nn.Dropout(c.dropout)(h, deterministic=deterministic)
        h = Mlp(
            d_ff=mlp_width(c), kind=c.mlp, use_bias=c.use_bias, init_std=c.init_std,
            out_init_std=out_std, dtype=dtype, param_dtype=pdtype, name="mlp",
        )(norm("ln_2")(x_btd))
        x_btd = x_btd + nn.Dropout(c.dropout)(h, deterministic=deterministic)
        return nn.with_logical_constraint(x_btd, ("batch", "length", "embed"))


class Transformer(nn.Module):
    """tokens (b, t) int32 -> logits (b, t, vocab) float32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, tokens_bt: jax.Array, *, train: bool = False,
        positions_bt: Optional[jax.Array] = None,
    ) -> jax.Array:
        c = self.cfg
        dtype, pdtype = dtype_of(c.dtype), dtype_of(c.param_dtype)
        b, t = tokens_bt.shape
        default_positions = positions_bt is None
        if default_positions:
            positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        embed = nn.Embed(
            c.vocab_size, c.d_model, dtype=dtype, param_dtype=pdtype,
            embedding_init=normal(c.init_std, ("vocab", "embed")), name="wte",
        )
        x_btd = embed(tokens_bt)
        if c.position == "learned":
            wpe = self.param(
                "wpe", normal(c.init_std, (None, "embed")), (c.max_seq_len, c.d_model), pdtype
            )
            # A slice, not a gather, in the common case: it keeps the batch sharding intact.
            pos_td = wpe[:t][None] if default_positions else jnp.take(wpe, positions_bt, axis=0)
            x_btd = x_btd + pos_td.astype(dtype)
        x_btd = self.perturb("embeddings", x_btd)  # lets tests take d(logits)/d(embeddings)
        x_btd = nn.Dropout(c.dropout)(x_btd, deterministic=not train)
        x_btd = nn.with_logical_constraint(x_btd, ("batch", "length", "embed"))
        for i in range(c.n_layers):
            x_btd = Block(c, name=f"h_{i}")(x_btd, positions_bt, not train)
        x_btd = Norm(c.norm, c.norm_eps, c.use_bias, dtype, pdtype, name="ln_f")(x_btd)
        if c.tie_embeddings:
            logits_btv = embed.attend(x_btd)
        else:
            logits_btv = nn.Dense(
                c.vocab_size, use_bias=False, dtype=dtype, param_dtype=pdtype,
                kernel_init=normal(c.init_std, ("embed", "vocab")), name="lm_head",
            )(x_btd)
        return logits_btv.astype(jnp.float32)
