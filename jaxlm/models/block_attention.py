"""Block-causal attention: exact causal softmax attention that skips the key blocks above the
diagonal (a CPU fast path for training and evaluation; no padding masks, no KV cache).

On CPU, `jax.nn.dot_product_attention`'s XLA implementation materializes the whole (b, n, t, t)
float32 score matrix and masks half of it. Here each block of `block_size` queries is scored
against only the keys up to the block's end: (blocks + 1) / (2 * blocks) of the score matmuls
and softmax work, in cache-sized pieces. Numerics follow dot_product_attention's XLA path:
float32 scores (`preferred_element_type`), 1/sqrt(head_dim) scale, float32 softmax, probabilities
cast to the values' dtype.

The backward pass is written by hand (`jax.custom_vjp`), as flash attention's is: it keeps each
block's probabilities P and computes dS = P * (dP - rowsum(dO * O)) once, where autodiff of the
softmax traced a max, a division and their transposes through the block loop (on a 2-core CPU
those elementwise passes and reductions took more time than the score matmuls; measured with
benchmarks/bench_attention.py, benchmarks/RESULTS.md). Heads are laid out head-major inside, so
every matmul is a plain batched (q, h) x (h, s) product.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_MASKED = np.float32(-1e30)  # finite: a fully masked row cannot occur (causal), no inf - inf


def _blocks(t: int, block_size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block_size, t)) for lo in range(0, t, block_size)]


def _probs(qs_bkgqh: jax.Array, k_bksh: jax.Array, lo: int) -> jax.Array:
    """float32 softmax probabilities (b, k, g, q, s) of the scaled queries [lo, lo + q) over
    keys [0, s). The scale is on the queries (h wide), not on the scores (s wide), and the
    normalization multiplies by 1 / rowsum: fewer passes over the (q, s) block."""
    q, s = qs_bkgqh.shape[3], k_bksh.shape[2]
    s_bkgqs = jnp.einsum("bkgqh,bksh->bkgqs", qs_bkgqh, k_bksh, preferred_element_type=jnp.float32)
    causal_qs = np.arange(s)[None, :] <= np.arange(lo, lo + q)[:, None]
    s_bkgqs = jnp.where(causal_qs, s_bkgqs, _MASKED)
    e_bkgqs = jnp.exp(s_bkgqs - jnp.max(s_bkgqs, axis=-1, keepdims=True))
    return e_bkgqs * (1.0 / jnp.sum(e_bkgqs, axis=-1, keepdims=True))


def _scale(h: int) -> np.float32:
    return np.float32(1.0 / np.sqrt(h))


def _forward(q_bkgth: jax.Array, k_bkth: jax.Array, v_bkth: jax.Array, block_size: int
             ) -> tuple[jax.Array, tuple]:
    t, h = q_bkgth.shape[3], q_bkgth.shape[4]
    qs_bkgth = q_bkgth * _scale(h).astype(q_bkgth.dtype)
    outs, probs = [], []
    for lo, hi in _blocks(t, block_size):
        p_bkgqs = _probs(qs_bkgth[:, :, :, lo:hi], k_bkth[:, :, :hi], lo)
        outs.append(jnp.einsum("bkgqs,bksh->bkgqh", p_bkgqs.astype(v_bkth.dtype),
                               v_bkth[:, :, :hi]))
        probs.append(p_bkgqs)
    o_bkgth = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
    return o_bkgth, (q_bkgth, k_bkth, v_bkth, o_bkgth, tuple(probs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q_bkgth: jax.Array, k_bkth: jax.Array, v_bkth: jax.Array, block_size: int
               ) -> jax.Array:
    return _forward(q_bkgth, k_bkth, v_bkth, block_size)[0]


def _backward(block_size: int, res: tuple, do_bkgth: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    q_bkgth, k_bkth, v_bkth, o_bkgth, probs = res
    t, h = q_bkgth.shape[3], q_bkgth.shape[4]
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    do_bkgth = f32(do_bkgth)
    delta_bkgt1 = jnp.sum(f32(o_bkgth) * do_bkgth, axis=-1, keepdims=True)  # rowsum(dO * O)
    dqs = []
    dk_bkth = jnp.zeros(k_bkth.shape, jnp.float32)
    dv_bkth = jnp.zeros(v_bkth.shape, jnp.float32)
    for (lo, hi), p_bkgqs in zip(_blocks(t, block_size), probs):
        do_bkgqh = do_bkgth[:, :, :, lo:hi]
        dv_bksh = jnp.einsum("bkgqs,bkgqh->bksh", p_bkgqs, do_bkgqh)
        dp_bkgqs = jnp.einsum("bkgqh,bksh->bkgqs", do_bkgqh, f32(v_bkth[:, :, :hi]))
        # dS of the scaled scores; the scale goes on dQ and dK below, (q, h) and (s, h) wide
        ds_bkgqs = p_bkgqs * (dp_bkgqs - delta_bkgt1[:, :, :, lo:hi])
        dqs.append(jnp.einsum("bkgqs,bksh->bkgqh", ds_bkgqs, f32(k_bkth[:, :, :hi])))
        dk_bksh = jnp.einsum("bkgqs,bkgqh->bksh", ds_bkgqs, f32(q_bkgth[:, :, :, lo:hi]))
        below = ((0, 0), (0, 0), (0, t - hi), (0, 0))  # keys past the block get nothing
        dk_bkth = dk_bkth + jnp.pad(dk_bksh, below)
        dv_bkth = dv_bkth + jnp.pad(dv_bksh, below)
    dq_bkgth = dqs[0] if len(dqs) == 1 else jnp.concatenate(dqs, axis=3)
    scale = _scale(h)
    return ((dq_bkgth * scale).astype(q_bkgth.dtype), (dk_bkth * scale).astype(k_bkth.dtype),
            dv_bkth.astype(v_bkth.dtype))


_attention.defvjp(lambda q, k, v, block_size: _forward(q, k, v, block_size), _backward)


def block_causal_attention(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array, *,
                           block_size: int = 128) -> jax.Array:
    """Causal self-attention; q (b, t, n, h), k and v (b, t, k, h) with n a multiple of k
    (grouped-query attention: query head i uses kv head i // (n / k)) -> (b, t, n, h)."""
    b, t, n, h = q_btnh.shape
    kv = k_btkh.shape[2]
    # n-major heads: head i = (i // g, i % g); head-major layout for the block matmuls
    q_bkgth = q_btnh.reshape(b, t, kv, n // kv, h).transpose(0, 2, 3, 1, 4)
    o_bkgth = _attention(q_bkgth, k_btkh.transpose(0, 2, 1, 3), v_btkh.transpose(0, 2, 1, 3),
                         block_size)
    return o_bkgth.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


__all__ = ["block_causal_attention"]
