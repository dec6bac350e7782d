"""Train state and its sharded initialization.

Pattern (flax lm1b / MaxText): `jax.eval_shape(init)` gives the abstract state with logical
axis names; the rules table turns them into NamedShardings; `jax.jit(init, out_shardings=...)`
then creates every parameter and optimizer slot directly in its shard, never whole on one device.
The same abstract state and shardings are the restore target for checkpoints.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2] raw key (checkpointable); dropout uses fold_in(rng, step)


def _init_boxed(model: nn.Module, optimizer: optax.GradientTransformation, seed: int, seq_len: int):
    def init(rng: jax.Array) -> TrainState:
        params_rng, state_rng = jax.random.split(rng)
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        params = model.init({"params": params_rng}, tokens)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params,
            opt_state=optimizer.init(params), rng=state_rng,
        )

    return init, jax.random.PRNGKey(seed)


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Keeps a mesh axis on a dim only where it divides the dim's size; replicates the whole
    leaf when its names do not fit its rank (Adafactor's factored moments inherit their
    parameter's names but have fewer dims)."""
    if len(spec) > len(shape):
        return PartitionSpec()
    fitted = []
    for dim, axes in zip(shape, spec):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = 1
        for name in names:
            size *= mesh.shape[name]
        fitted.append(axes if dim % size == 0 else None)
    return PartitionSpec(*fitted)


def state_shardings(
    model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int, mesh: Mesh
) -> tuple[Any, Any]:
    """(abstract unboxed TrainState of ShapeDtypeStructs, matching tree of NamedShardings)."""
    init, rng = _init_boxed(model, optimizer, 0, seq_len)
    boxed = jax.eval_shape(init, rng)
    abstract = nn.meta.unbox(boxed)
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), sharding.LOGICAL_RULES)
    shardings = jax.tree.map(
        lambda s, leaf: NamedSharding(mesh, _fit_spec(s, leaf.shape, mesh)),
        specs, abstract, is_leaf=lambda x: isinstance(x, PartitionSpec),
    )
    return abstract, shardings


def init_state(
    model: nn.Module, optimizer: optax.GradientTransformation, *, seed: int, seq_len: int,
    mesh: Mesh,
) -> tuple[TrainState, Any]:
    """A freshly initialized, already sharded TrainState and its shardings."""
    _, shardings = state_shardings(model, optimizer, seq_len, mesh)
    init, rng = _init_boxed(model, optimizer, seed, seq_len)
    state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    return state, shardings


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
