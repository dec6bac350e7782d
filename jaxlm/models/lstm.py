"""Stacked LSTM language model (the classic recipe): embedding -> LSTM layers -> linear head.

Weights follow torch.nn.LSTM's layout so PyTorch checkpoints map one to one: per layer a fused
input kernel (d_in, 4h), a recurrent kernel (h, 4h) and two biases, gate order i, f, g, o,
initialized U(-1/sqrt(h), 1/sqrt(h)). The embedding width e (`model.embed_dim`, default
`d_model`) is layer 0's d_in; later layers take h. The input projection for all time steps is
one matmul; only the recurrent part runs in a `lax.scan` over time.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.config import ModelConfig
from jaxlm.models.layers import REMAT_SAVE, dtype_of, normal
from jaxlm.sharding import constrain


def _uniform(scale: float, axes: tuple[Optional[str], ...]):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return nn.with_logical_partitioning(init, axes)


class LSTMLayer(nn.Module):
    """x (b, t, d_in) -> (outputs (b, t, h), final carry (c, h) each (b, h)).

    `valid_bt` (optional, bool): steps where it is False leave the carry unchanged (left padding
    while decoding).
    """

    hidden: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    input_axis: str = "embed"  # logical name of d_in: "vocab_embed" for layer 0 (the embedding)

    @nn.compact
    def __call__(
        self, x_btd: jax.Array, carry: Optional[tuple[jax.Array, jax.Array]] = None,
        valid_bt: Optional[jax.Array] = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        h, d_in = self.hidden, x_btd.shape[-1]
        scale = 1.0 / h**0.5
        w_ih = self.param("w_ih", _uniform(scale, (self.input_axis, "gates")), (d_in, 4 * h),
                          self.param_dtype)
        w_hh = self.param("w_hh", _uniform(scale, ("embed", "gates")), (h, 4 * h), self.param_dtype)
        b_ih = self.param("b_ih", _uniform(scale, ("gates",)), (4 * h,), self.param_dtype)
        b_hh = self.param("b_hh", _uniform(scale, ("gates",)), (4 * h,), self.param_dtype)
        b = x_btd.shape[0]
        gates_in_btg = (x_btd.astype(self.dtype) @ w_ih.astype(self.dtype)) + (b_ih + b_hh).astype(
            self.dtype
        )
        if carry is None:
            carry = (jnp.zeros((b, h), jnp.float32), jnp.zeros((b, h), jnp.float32))
        w_hh_c = w_hh.astype(self.dtype)

        def step(carry, g_in_bg):
            c_bh, h_bh = carry
            g_bg = (g_in_bg + h_bh.astype(self.dtype) @ w_hh_c).astype(jnp.float32)
            i, f, g, o = jnp.split(g_bg, 4, axis=-1)
            c_bh = jax.nn.sigmoid(f) * c_bh + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_bh = jax.nn.sigmoid(o) * jnp.tanh(c_bh)
            # Pinning the carry's sharding is required, not an optimization: without it XLA's
            # SPMD partitioner (jax 0.10.2, CPU) computed wrong gradients on a data x fsdp x
            # tensor mesh (all three > 1); tests/multidevice checks the equality.
            c_bh = constrain(c_bh, ("batch", None))
            h_bh = constrain(h_bh, ("batch", None))
            return (c_bh, h_bh), h_bh

        def masked_step(carry, inputs):
            g_in_bg, valid_b = inputs
            new, h_bh = step(carry, g_in_bg)
            keep = lambda n, o: jnp.where(valid_b[:, None], n, o)  # noqa: E731
            return jax.tree.map(keep, new, carry), h_bh

        if valid_bt is None:
            carry, out_tbh = jax.lax.scan(step, carry, jnp.swapaxes(gates_in_btg, 0, 1))
        else:
            carry, out_tbh = jax.lax.scan(
                masked_step, carry, (jnp.swapaxes(gates_in_btg, 0, 1), valid_bt.T)
            )
        return jnp.swapaxes(out_tbh, 0, 1).astype(self.dtype), carry


class LSTMLM(nn.Module):
    """tokens (b, t) int32 -> logits (b, t, vocab) float32. Embedding (vocab, e), LSTM layers of
    width h = d_model, head (h, vocab) or tied (needs e == h).

    `decode=True` (generation, with a mutable `cache` collection): each layer starts from its
    cached (c, h) state (`carry_{i}`, zeros when created) and stores its final state there;
    tokens at `positions_bt` below 0 (left padding) leave the state unchanged.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, tokens_bt: jax.Array, *, train: bool = False, positions_bt=None, decode: bool = False
    ) -> jax.Array:
        c = self.cfg
        dtype, pdtype = dtype_of(c.dtype), dtype_of(c.param_dtype)
        embed = nn.Embed(
            c.vocab_size, c.embed_dim or c.d_model, dtype=dtype, param_dtype=pdtype,
            embedding_init=_uniform(0.1, ("vocab", "vocab_embed")), name="embed",
        )
        x_btd = self.perturb("embeddings", embed(tokens_bt))  # (b, t, e)
        x_btd = nn.Dropout(c.dropout)(x_btd, deterministic=not train)
        layer_cls = LSTMLayer
        if c.remat != "none" and not decode:
            layer_cls = nn.remat(LSTMLayer, policy=REMAT_SAVE[c.remat])
        valid_bt = None if positions_bt is None or not decode else positions_bt >= 0
        for i in range(c.n_layers):
            layer = layer_cls(c.d_model, dtype, pdtype, "embed" if i else "vocab_embed",
                              name=f"lstm_{i}")
            if decode:
                zeros = jnp.zeros((tokens_bt.shape[0], c.d_model), jnp.float32)
                cache = self.variable("cache", f"carry_{i}", lambda z=zeros: (z, z))
                x_btd, cache.value = layer(x_btd, cache.value, valid_bt)
            else:
                x_btd, _ = layer(x_btd)
            x_btd = constrain(x_btd, ("batch", "length", "embed"))  # layer boundary
            x_btd = nn.Dropout(c.dropout)(x_btd, deterministic=not train)
        if c.tie_embeddings:
            logits_btv = embed.attend(x_btd)
        else:
            logits_btv = nn.Dense(
                c.vocab_size, dtype=dtype, param_dtype=pdtype,
                kernel_init=normal(c.init_std, ("embed", "vocab")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                name="head",
            )(x_btd)
        return logits_btv.astype(jnp.float32)
