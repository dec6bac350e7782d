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

from jaxlm.config import ModelConfig, is_causal, pooling
from jaxlm.sharding import constrain
from jaxlm.models import mup
from jaxlm.models.layers import DECODE_KERNELS, REMAT_SAVE, Attention, Mlp, Norm, dtype_of, normal
from jaxlm.models.matmul import dense_dot_general


def mlp_width(cfg: ModelConfig) -> int:
    """d_ff when unset: 4*d (GELU); for SwiGLU 8/3*d rounded up to a multiple of 64 (LLaMA)."""
    if cfg.d_ff is not None:
        return cfg.d_ff
    if cfg.mlp == "swiglu":
        return int(math.ceil(8 * cfg.d_model / 3 / 64) * 64)
    return 4 * cfg.d_model


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    (b, t, d) -> ((b, t, d), None): nn.scan's (carry, output) form, so one class serves both the
    Python loop over layers and `scan_layers`.
    """

    cfg: ModelConfig
    train: bool = False
    decode: bool = False  # generation: attention keeps a KV cache (see layers.Attention)

    @nn.compact
    def __call__(
        self, x_btd: jax.Array, positions_bt: jax.Array, valid_bt: Optional[jax.Array] = None
    ) -> tuple[jax.Array, None]:
        c = self.cfg
        dtype, pdtype = dtype_of(c.dtype), dtype_of(c.param_dtype)
        hidden_std = c.init_std * mup.hidden_init_scale(c)  # μP: / sqrt(width mult); else 1
        out_std = hidden_std / math.sqrt(2 * c.n_layers)
        norm = lambda name: Norm(c.norm, c.norm_eps, c.use_bias, dtype, pdtype, name=name)  # noqa: E731
        impl = None if c.attention_impl == "auto" else c.attention_impl
        h = Attention(
            n_heads=c.n_heads, n_kv_heads=c.n_kv_heads or c.n_heads,
            head_dim=c.d_model // c.n_heads, use_bias=c.use_bias,
            use_rope=c.position == "rope", rope_theta=c.rope_theta, init_std=hidden_std,
            out_init_std=out_std, dtype=dtype, param_dtype=pdtype, q_scale=mup.query_scale(c),
            implementation=None if self.decode else impl, decode=self.decode,
            causal=is_causal(c), qkv_bias=c.qkv_bias, name="attn",
        )(norm("ln_1")(x_btd), positions_bt, valid_bt)
        x_btd = x_btd + nn.Dropout(c.dropout)(h, deterministic=not self.train)
        h = Mlp(
            d_ff=mlp_width(c), kind=c.mlp, use_bias=c.use_bias, init_std=hidden_std,
            out_init_std=out_std, dtype=dtype, param_dtype=pdtype, name="mlp",
        )(norm("ln_2")(x_btd))
        x_btd = x_btd + nn.Dropout(c.dropout)(h, deterministic=not self.train)
        # The one activation constraint per block: its output, batch-sharded.
        return constrain(x_btd, ("batch", "length", "embed")), None


def _block_class(cfg: ModelConfig, decode: bool = False) -> type:
    if cfg.remat == "none" or decode:  # decoding has no backward pass to save memory for
        return Block
    # prevent_cse is only needed outside scan (scan already stops CSE across iterations).
    return nn.remat(Block, policy=REMAT_SAVE[cfg.remat], prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
    """tokens (b, t) int32 -> logits (b, t, vocab) float32; with model.objective=classify,
    class logits (b, num_labels) from the final hidden states pooled over `valid_bt` (bool (b, t),
    False at padding; None: all valid). model.objective=mlm is the same network attending both
    ways (`is_causal`), its tied embedding as the MLM output layer.

    `decode=True` (generation, with a mutable `cache` collection): the tokens continue the
    cached sequence, and `positions_bt` gives their absolute positions; a position below 0
    marks left padding, which no later token attends to. `jaxlm.generate` drives this.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, tokens_bt: jax.Array, *, train: bool = False,
        positions_bt: Optional[jax.Array] = None, decode: bool = False,
        valid_bt: Optional[jax.Array] = None,
    ) -> jax.Array:
        c = self.cfg
        dtype, pdtype = dtype_of(c.dtype), dtype_of(c.param_dtype)
        b, t = tokens_bt.shape
        default_positions = positions_bt is None
        if default_positions:
            positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        elif decode:
            positions_bt = jnp.maximum(positions_bt, 0)  # padding: a position-0 token of its own
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
        x_btd = constrain(x_btd, ("batch", "length", "embed"))
        block_cls = _block_class(c, decode)
        if c.scan_layers:  # one compiled body; params (and KV caches) on a leading `layers` axis
            stack = nn.scan(
                block_cls, variable_axes={"params": 0, "cache": 0, DECODE_KERNELS: 0},
                length=c.n_layers,
                in_axes=nn.broadcast,
                split_rngs={"params": True, "dropout": True},
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x_btd, _ = stack(c, train, decode, name="h")(x_btd, positions_bt, valid_bt)
        else:
            for i in range(c.n_layers):
                x_btd, _ = block_cls(c, train, decode, name=f"h_{i}")(
                    x_btd, positions_bt, valid_bt)
        x_btd = Norm(c.norm, c.norm_eps, c.use_bias, dtype, pdtype, name="ln_f")(x_btd)
        if c.objective == "classify":
            return self._classify(x_btd, valid_bt, dtype, pdtype)
        if c.tie_embeddings and decode and x_btd.shape[1] == 1:
            # one new token per row: E (v, d) @ x (d, b) reads the embedding in its own layout.
            # `embed.attend` (x @ E.T) made XLA's CPU matrix-vector path copy E transposed on
            # every generated token (2 x 154 MB per token on GPT-2 small).
            x_bd, e_vd = embed.promote_dtype(x_btd[:, 0], embed.embedding, dtype=embed.dtype)
            logits_btv = jnp.dot(e_vd, x_bd.T).T[:, None, :]
        elif c.tie_embeddings:
            logits_btv = embed.attend(x_btd)
        else:
            logits_btv = nn.Dense(
                c.vocab_size, use_bias=False, dtype=dtype, param_dtype=pdtype,
                kernel_init=normal(c.init_std, ("embed", "vocab")),
                dot_general=dense_dot_general(), name="lm_head",
            )(x_btd)
        if c.mup_base_width is not None:  # μP output multiplier 1/width mult
            logits_btv = logits_btv * mup.output_mult(c)
        return logits_btv.astype(jnp.float32)

    def _classify(self, x_btd, valid_bt, dtype, pdtype) -> jax.Array:
        """Pooled hidden state -> (b, num_labels) float32 logits (`classifier` head)."""
        c = self.cfg
        if valid_bt is None:
            valid_bt = jnp.ones(x_btd.shape[:2], bool)
        kind = pooling(c)
        if kind == "first":
            pooled_bd = x_btd[:, 0]
        elif kind == "last":  # the last valid (non-pad) token: it has seen the whole text
            last_b = jnp.maximum(valid_bt.sum(axis=1) - 1, 0)
            pooled_bd = jnp.take_along_axis(x_btd, last_b[:, None, None], axis=1)[:, 0]
        else:  # mean over valid tokens
            w_bt = valid_bt.astype(x_btd.dtype)
            pooled_bd = (x_btd * w_bt[..., None]).sum(1) / jnp.maximum(w_bt.sum(1), 1)[:, None]
        return nn.Dense(
            c.num_labels, dtype=dtype, param_dtype=pdtype,
            kernel_init=normal(c.init_std, ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
            name="classifier",
        )(pooled_bd).astype(jnp.float32)


def decode_kernels(params: dict) -> dict:
    """The `layers.DECODE_KERNELS` collection of a Transformer's params (per-layer or
    `scan_layers` layout): every block's attention `out` kernel (n, h, d) and MLP `down` kernel
    (f, d) transposed to (d, n * h) and (d, f), a leading layers axis kept. Costs one copy of
    those kernels (GPT-2 small: 142 MB)."""
    def block(p: dict) -> dict:
        out = p["attn"]["out"]["kernel"]
        out_id = out.reshape(out.shape[:-3] + (-1, out.shape[-1]))
        return {"attn": {"out": jnp.swapaxes(out_id, -1, -2)},
                "mlp": {"down": jnp.swapaxes(p["mlp"]["down"]["kernel"], -1, -2)}}

    return {k: block(v) for k, v in params.items() if k == "h" or _is_layer(k)}


def _is_layer(key: str) -> bool:
    """A per-layer params key: h_0, h_1, ..."""
    return key.startswith("h_") and key[2:].isdigit()


def stack_layers(params: dict, n_layers: int) -> dict:
    """Per-layer params {h_0, ..., h_{L-1}} -> the `scan_layers` layout {h: leaves with a leading
    layers axis}. Works on any tree whose layer subtrees share one structure (e.g. Adam moments)."""
    layers = [params[f"h_{i}"] for i in range(n_layers)]
    out = {k: v for k, v in params.items() if not _is_layer(k)}
    out["h"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return out


def unstack_layers(params: dict, n_layers: int) -> dict:
    """The inverse of `stack_layers`."""
    out = {k: v for k, v in params.items() if k != "h"}
    for i in range(n_layers):
        out[f"h_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["h"])
    return out
