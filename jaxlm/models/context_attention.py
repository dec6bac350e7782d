"""Context-parallel attention: queries stay split along the sequence, keys and values are
all-gathered along it (the all-gather form of context parallelism, as in MaxText).

Inside a sharded step whose mesh splits `length` (`mesh.context` > 1), each shard holds t / c
query positions; it gathers all t keys and values over the context axis and attends with a
causal mask in *global* positions (query i of shard s sits at s * t / c + i). Per device this
keeps activations at 1 / c of the sequence, at the price of the (b, t, k, h) keys and values
and a (b, n, t / c, t) score block during attention. Autodiff turns the all-gather into a
reduce-scatter of the key/value gradients, so gradients equal the unsharded run's.

The splash and cuDNN kernels are not used here: both build their causal mask for queries and
keys that start at the same position, and a shard's queries start at offset s * t / c (splash
needs that mask as a static array, and the shard index is only known at run time). Attention
under a context axis therefore runs XLA's `dot_product_attention` per shard with an explicit
mask; `attention.resolve` says so once at startup when a fast kernel was asked for.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxlm import sharding


def _local(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array,
           valid_bt: Optional[jax.Array], axis: str, causal: bool) -> jax.Array:
    """One shard: q (b, t/c, n, h) against gathered k, v (b, t, k, h); valid (b, t/c) or None."""
    k_all = jax.lax.all_gather(k_btkh, axis, axis=1, tiled=True)
    v_all = jax.lax.all_gather(v_btkh, axis, axis=1, tiled=True)
    t_q, t_k = q_btnh.shape[1], k_all.shape[1]
    mask_b1qk = None
    if causal:
        q_pos = jax.lax.axis_index(axis) * t_q + jnp.arange(t_q)
        mask_b1qk = (jnp.arange(t_k)[None, :] <= q_pos[:, None])[None, None]
    if valid_bt is not None:
        valid_all = jax.lax.all_gather(valid_bt, axis, axis=1, tiled=True)[:, None, None, :]
        mask_b1qk = valid_all if mask_b1qk is None else mask_b1qk & valid_all
    return jax.nn.dot_product_attention(q_btnh, k_all, v_all, mask=mask_b1qk,
                                        implementation="xla")


def context_attention(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array, *,
                      causal: bool = True, valid_bt: Optional[jax.Array] = None) -> jax.Array:
    """Self-attention with the sequence split over the mesh's context axis: q (b, t, n, h),
    k and v (b, t, k, h) (grouped-query when k < n), `valid_bt` (b, t) key padding or None ->
    (b, t, n, h). Must be traced under `sharding.activation_mesh` with length split; runs per
    shard under shard_map: batch over (data, fsdp), length over context, heads over tensor."""
    axis, _ = sharding.length_shards()
    if axis is None:
        raise ValueError("context_attention needs a mesh that splits the length axis")
    mesh = jax.sharding.get_abstract_mesh()
    q_spec = sharding.logical_spec(("batch", "length", "heads", "head_dim"))
    kv_spec = sharding.logical_spec(("batch", "length", "kv_heads", "head_dim"))
    args, specs = [q_btnh, k_btkh, v_btkh], [q_spec, kv_spec, kv_spec]
    if valid_bt is not None:
        args.append(valid_bt)
        specs.append(sharding.logical_spec(("batch", "length")))

    def body(q, k, v, *valid):
        return _local(q, k, v, valid[0] if valid else None, axis, causal)

    return jax.shard_map(body, mesh=mesh, in_specs=tuple(specs), out_specs=q_spec)(*args)


__all__ = ["context_attention"]
