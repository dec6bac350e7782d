"""Sampling from a trained model; the whole decoding loop is one compiled `lax.fori_loop`.

This version recomputes the full (fixed-length, causal) forward pass at each step, which is
exact for both families and fine for short samples; a KV-cache decoder replaces it later.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _filter_top_k(logits_bv: jax.Array, top_k: int) -> jax.Array:
    if top_k <= 0 or top_k >= logits_bv.shape[-1]:
        return logits_bv
    kth = jax.lax.top_k(logits_bv, top_k)[0][:, -1:]
    return jnp.where(logits_bv < kth, -jnp.inf, logits_bv)


@partial(jax.jit, static_argnames=("model", "prompt_len", "total_len", "top_k"))
def _sample(model: nn.Module, params: Any, buf_bt: jax.Array, rng: jax.Array, temperature,
            *, prompt_len: int, total_len: int, top_k: int) -> jax.Array:
    def body(i, carry):
        buf_bt, rng = carry
        rng, key = jax.random.split(rng)
        logits_bv = model.apply({"params": params}, buf_bt)[:, i - 1, :]
        greedy = jnp.argmax(logits_bv, axis=-1)
        scaled = _filter_top_k(logits_bv / jnp.maximum(temperature, 1e-6), top_k)
        sampled = jax.random.categorical(key, scaled, axis=-1)
        token = jnp.where(temperature > 0, sampled, greedy).astype(buf_bt.dtype)
        return buf_bt.at[:, i].set(token), rng

    buf_bt, _ = jax.lax.fori_loop(prompt_len, total_len, body, (buf_bt, rng))
    return buf_bt


def sample_tokens(
    model: nn.Module, params: Any, prompt_ids: list[int], *, num_samples: int, max_new_tokens: int,
    max_len: int, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
) -> jax.Array:
    """(num_samples, prompt + new) token ids; the total is capped at `max_len` positions."""
    prompt_len = max(len(prompt_ids), 1)
    total = min(prompt_len + max_new_tokens, max_len)
    buf = jnp.zeros((num_samples, total), jnp.int32)
    if prompt_ids:
        buf = buf.at[:, : len(prompt_ids)].set(jnp.asarray(prompt_ids[:total], jnp.int32))
    return _sample(model, params, buf, jax.random.PRNGKey(seed), jnp.float32(temperature),
                   prompt_len=min(prompt_len, total), total_len=total, top_k=top_k)
