"""Dense-layer matmuls whose backward pass is two plain 2D matmuls (a CPU fast path).

A Dense layer maps x (b, t, d) through a kernel (d, f). Autodiff's weight gradient contracts
x and dy over (b, t); on CPU, XLA's layout assignment then copied dy (or x) into a transposed
layout and ran the contraction as an Eigen matmul with both operands transposed, at about half
the speed of the forward matmul (benchmarks/profile_step.py: the MLP's weight gradients took
twice the time of its forward matmuls). Here the layer's input is flattened to (n, d) and the
VJP is written out: dx = dy @ w.T and dw = x.T @ dy as dot_generals over 2D operands, which
XLA:CPU runs as library matmuls without copies. The arithmetic is the same as autodiff's.

`dense_dot_general` is what the model's Dense layers pass to flax as `dot_general`; off CPU it
is `lax.dot_general` itself (the fast path is measured on CPU only).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax
from jax import lax


@jax.custom_vjp
def matmul_2d(x_nk: jax.Array, w_km: jax.Array) -> jax.Array:
    """x (n, k) @ w (k, m) -> (n, m), with the hand-written VJP of this module."""
    return lax.dot_general(x_nk, w_km, (((1,), (0,)), ((), ())))


def _matmul_fwd(x_nk: jax.Array, w_km: jax.Array) -> tuple[jax.Array, tuple]:
    return matmul_2d(x_nk, w_km), (x_nk, w_km)


def _matmul_bwd(res: tuple, dy_nm: jax.Array) -> tuple[jax.Array, jax.Array]:
    x_nk, w_km = res
    dx_nk = lax.dot_general(dy_nm, w_km, (((1,), (1,)), ((), ())))
    k, m = w_km.shape
    if k > m:
        # XLA:CPU's matmul with a transposed left operand ran at half speed when its output had
        # more rows than columns (d_ff x d_model: 54 vs 100 GFLOP/s at n = 2048); dw.T = dy.T @ x
        # has the other shape, and the barrier keeps XLA from folding the transpose back in.
        dwt_mk = lax.dot_general(dy_nm, x_nk, (((0,), (0,)), ((), ())))
        dw_km = lax.optimization_barrier(dwt_mk).T
    else:
        dw_km = lax.dot_general(x_nk, dy_nm, (((0,), (0,)), ((), ())))
    return dx_nk.astype(x_nk.dtype), dw_km.astype(w_km.dtype)


matmul_2d.defvjp(_matmul_fwd, _matmul_bwd)


def flat_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                     precision: Optional[Any] = None,
                     preferred_element_type: Optional[Any] = None) -> jax.Array:
    """`lax.dot_general` for a Dense layer's contraction (the last c axes of `lhs` with the
    first c axes of `rhs`, no batch axes), computed as one 2D `matmul_2d`; any other
    contraction, precision or output dtype goes to `lax.dot_general` unchanged."""
    (lhs_c, rhs_c), (lhs_b, rhs_b) = dimension_numbers
    c = len(lhs_c)
    dense = (not lhs_b and not rhs_b and precision is None and preferred_element_type is None
             and lhs.dtype == rhs.dtype and c >= 1
             and tuple(lhs_c) == tuple(range(lhs.ndim - c, lhs.ndim))
             and tuple(rhs_c) == tuple(range(c)))
    if not dense:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    batch_shape: Sequence[int] = lhs.shape[:lhs.ndim - c]
    out_shape: Sequence[int] = rhs.shape[c:]
    k = math.prod(lhs.shape[lhs.ndim - c:])
    out_2d = matmul_2d(lhs.reshape(math.prod(batch_shape), k),
                       rhs.reshape(k, math.prod(out_shape)))
    return out_2d.reshape(*batch_shape, *out_shape)


def dense_dot_general() -> Optional[Any]:
    """The `dot_general` for the model's Dense layers: `flat_dot_general` on CPU, else None
    (flax's default, `lax.dot_general`)."""
    return flat_dot_general if jax.default_backend() == "cpu" else None


__all__ = ["matmul_2d", "flat_dot_general", "dense_dot_general"]
