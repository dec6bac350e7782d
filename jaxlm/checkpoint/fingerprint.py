"""Checkpoint fingerprints: one uint32 per leaf, computed where the leaf lives (no gather to the
host), and a digest of the JSON items (the data-iterator position). Orbax's format has no
checksum over array data, so restores are checked against these."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def _as_uint32(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)  # 8 bytes: (..., 2)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """A position-weighted hash of the leaf's bits: any change of one element changes it.

    Each element maps injectively (odd multipliers and xorshifts are bijections of uint32) and
    the wrapping sum does not depend on how the leaf is sharded.
    """
    u = _as_uint32(x)
    idx = jnp.zeros(u.shape, jnp.uint32)
    for d, n in enumerate(u.shape):
        idx = idx * jnp.uint32(n) + jax.lax.broadcasted_iota(jnp.uint32, u.shape, d)
    h = u * ((idx * jnp.uint32(2) + jnp.uint32(1)) * jnp.uint32(0x9E3779B1))
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    return jnp.sum(h, dtype=jnp.uint32)


def _fingerprint_and_finite(leaves: list) -> tuple[jax.Array, jax.Array]:
    fps = jnp.stack([_leaf_fingerprint(x) for x in leaves]) if leaves else jnp.zeros(0, jnp.uint32)
    finite = jnp.array(True)
    for x in leaves:
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite &= jnp.all(jnp.isfinite(x))
    return fps, finite


_FINGERPRINT_FNS: dict[Any, Callable] = {}


def fingerprint(tree: Any) -> tuple[dict[str, int], bool]:
    """({leaf path: uint32 fingerprint}, whether every float leaf is finite)."""
    paths_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = [leaf for _, leaf in paths_leaves]
    # replicated results: every process of a multi-host run can read them
    mesh = next((x.sharding.mesh for x in leaves
                 if isinstance(getattr(x, "sharding", None), jax.sharding.NamedSharding)), None)
    if mesh not in _FINGERPRINT_FNS:
        out = None if mesh is None else jax.sharding.NamedSharding(mesh,
                                                                   jax.sharding.PartitionSpec())
        _FINGERPRINT_FNS[mesh] = jax.jit(_fingerprint_and_finite, out_shardings=out)
    fps, finite = _FINGERPRINT_FNS[mesh](leaves)
    fps = np.asarray(jax.device_get(fps))
    names = [jax.tree_util.keystr(p) for p, _ in paths_leaves]
    return {n: int(f) for n, f in zip(names, fps)}, bool(jax.device_get(finite))


def json_fingerprint(item: object) -> str:
    """A digest of what `item` reads back as from a JSON checkpoint item: the same before the
    save (tuples, int dict keys) and after the restore (lists, string keys)."""
    canonical = json.dumps(json.loads(json.dumps(item)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
