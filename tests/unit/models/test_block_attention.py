"""Block-causal attention (jaxlm.models.block_attention) equals jax.nn.dot_product_attention's
causal XLA path in values and gradients: whole and partial blocks, one block, grouped-query
heads, bfloat16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.models.block_attention import block_causal_attention


def _qkv(t: int, n: int, kv: int, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return tuple(jnp.asarray(rng.standard_normal((2, t, heads, 8)), dtype)
                 for heads in (n, kv, kv))


def _loss_and_grads(attn, q, k, v):
    return jax.value_and_grad(lambda *a: (attn(*a).astype(jnp.float32) ** 2).sum(),
                              argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("t,block,n,kv", [(32, 8, 4, 4), (30, 8, 4, 4), (16, 64, 4, 4),
                                          (32, 8, 4, 2), (24, 8, 6, 1)])
def test_matches_dot_product_attention(t, block, n, kv):
    q, k, v = _qkv(t, n, kv)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    out = block_causal_attention(q, k, v, block_size=block)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    ref_l, ref_g = _loss_and_grads(
        lambda *a: jax.nn.dot_product_attention(*a, is_causal=True, implementation="xla"), q, k, v)
    l, g = _loss_and_grads(lambda *a: block_causal_attention(*a, block_size=block), q, k, v)
    np.testing.assert_allclose(l, ref_l, rtol=1e-5)
    for a, b in zip(g, ref_g):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_keeps_dtype_and_values():
    q, k, v = _qkv(32, 4, 4, jnp.bfloat16)
    out = block_causal_attention(q, k, v, block_size=8)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               rtol=2e-2, atol=2e-2)


def test_bfloat16_gradients_keep_dtypes_and_follow_float32():
    """The hand-written backward returns each input's dtype, with float32 inside."""
    q, k, v = _qkv(32, 4, 2, jnp.bfloat16)
    _, g16 = _loss_and_grads(lambda *a: block_causal_attention(*a, block_size=8), q, k, v)
    f32 = [a.astype(jnp.float32) for a in (q, k, v)]
    _, g32 = _loss_and_grads(lambda *a: block_causal_attention(*a, block_size=8), *f32)
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=5e-2, atol=5e-2)


def test_under_remat_and_jit():
    """jax.checkpoint (model.remat) around the custom VJP gives the same gradients."""
    q, k, v = _qkv(32, 4, 4)
    attn = lambda *a: block_causal_attention(*a, block_size=8)  # noqa: E731
    _, g = _loss_and_grads(attn, q, k, v)
    _, g_remat = jax.jit(lambda *a: _loss_and_grads(jax.checkpoint(attn), *a))(q, k, v)
    for a, b in zip(g_remat, g):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
