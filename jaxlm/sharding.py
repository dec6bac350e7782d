"""Device mesh and the one table mapping logical axis names to mesh axes.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism that also shards parameters
and optimizer state), `tensor` (heads, MLP width and vocabulary split across devices).
An activation's `embed` axis is left unsharded when `fsdp` is already taken by its batch axis
(flax resolves a rule only to mesh axes not yet used in the same spec).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxlm.config import MeshConfig
from jaxlm.errors import JaxlmError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """Resolves -1 entries; raises JaxlmError naming the keys when sizes do not fit the devices."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1:
        raise JaxlmError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if n_devices % known:
            raise JaxlmError(
                f"mesh sizes {cfg.data}x{cfg.fsdp}x{cfg.tensor} do not divide {n_devices} devices"
            )
        sizes[unknown[0]] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise JaxlmError(
            f"mesh.data*mesh.fsdp*mesh.tensor = {math.prod(sizes)} but there are {n_devices} devices"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(cfg, len(devices))
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_sharding(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of LogicallyPartitioned leaves (e.g. from jax.eval_shape(init))."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, LOGICAL_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """(batch, length) arrays: batch split over data and fsdp."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
