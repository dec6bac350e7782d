"""The Dense layers' 2D matmul with a hand-written VJP (jaxlm.models.matmul) equals
lax.dot_general in values and gradients, for both weight-gradient forms (kernel taller than
wide and wider than tall), multi-axis contractions (attention's projections), bfloat16, and
under jit with the model's Dense layers; other contractions pass through unchanged."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxlm.models import matmul
from jaxlm.models.matmul import flat_dot_general


def _arrays(x_shape, w_shape, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.standard_normal(x_shape), dtype),
            jnp.asarray(rng.standard_normal(w_shape) * 0.1, dtype))


def _value_and_grads(dot, x, w, dims):
    return jax.value_and_grad(lambda x, w: (jnp.tanh(dot(x, w, dims)).astype(jnp.float32) ** 2)
                              .sum(), argnums=(0, 1))(x, w)


@pytest.mark.parametrize("x_shape,w_shape,c", [
    ((2, 5, 8), (8, 24), 1),        # MLP up: kernel wider than tall (dw = x.T @ dy)
    ((2, 5, 24), (24, 8), 1),       # MLP down: taller than wide (dw = (dy.T @ x).T)
    ((2, 5, 8), (8, 2, 4), 1),      # query/key/value: (d) -> (heads, head_dim)
    ((2, 5, 2, 4), (2, 4, 8), 2),   # attention out: (heads, head_dim) -> (d)
    ((3, 8), (8, 8), 1),            # 2D input, square kernel
])
def test_matches_dot_general(x_shape, w_shape, c):
    x, w = _arrays(x_shape, w_shape)
    dims = ((tuple(range(len(x_shape) - c, len(x_shape))), tuple(range(c))), ((), ()))
    np.testing.assert_allclose(flat_dot_general(x, w, dims), lax.dot_general(x, w, dims),
                               rtol=1e-6, atol=1e-6)
    (l, (dx, dw)), (ref_l, (ref_dx, ref_dw)) = (_value_and_grads(f, x, w, dims)
                                                for f in (flat_dot_general, lax.dot_general))
    np.testing.assert_allclose(l, ref_l, rtol=1e-6)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-5, atol=1e-6)
    assert dx.shape == x.shape and dw.shape == w.shape


def test_bfloat16_keeps_dtypes():
    x, w = _arrays((2, 4, 16), (16, 8), jnp.bfloat16)
    dims = (((2,), (0,)), ((), ()))
    _, (dx, dw) = _value_and_grads(flat_dot_general, x, w, dims)
    _, (ref_dx, ref_dw) = _value_and_grads(lax.dot_general, x, w, dims)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(dw), np.float32(ref_dw), rtol=2e-2, atol=2e-2)


def test_other_contractions_pass_through(monkeypatch):
    """A batch axis, a contraction that is not (last axes) x (first axes), or a precision: the
    custom VJP is not used."""
    calls = []
    monkeypatch.setattr(matmul, "matmul_2d", lambda *a: calls.append(a))
    x, w = _arrays((3, 4, 8), (3, 8, 5))
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_allclose(flat_dot_general(x, w, batched), lax.dot_general(x, w, batched))
    x2, w2 = _arrays((4, 8), (5, 8))
    np.testing.assert_allclose(flat_dot_general(x2, w2, (((1,), (1,)), ((), ()))),
                               x2 @ w2.T, rtol=1e-6)
    flat_dot_general(x2, w2.T, (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
    assert calls == []


def test_dense_layer_gradients_match_flax_default():
    """nn.Dense with `dot_general=flat_dot_general` (as the model's layers on CPU): the same
    parameters, outputs and gradients as flax's own dot_general, under jit."""
    x, _ = _arrays((2, 6, 16), (1, 1))
    flat = nn.Dense(24, dot_general=flat_dot_general)
    plain = nn.Dense(24)
    params = plain.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, flat.init(jax.random.key(0), x)) == \
        jax.tree.map(jnp.shape, params)

    @jax.jit
    def grads(p, x):
        return [jax.grad(lambda p: (m.apply(p, x) ** 2).sum())(p) for m in (flat, plain)]

    g_flat, g_plain = grads(params, x)
    for a, b in zip(jax.tree.leaves(g_flat), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dense_dot_general_is_the_cpu_fast_path():
    assert jax.default_backend() == "cpu"  # the suite runs on CPU
    assert matmul.dense_dot_general() is flat_dot_general
