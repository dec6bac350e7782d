"""Device mesh and the one table mapping logical axis names to mesh axes.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism that also shards parameters
and optimizer state), `tensor` (heads, MLP width and vocabulary split across devices).
An activation's `embed` axis is left unsharded when `fsdp` is already taken by its batch axis
(flax resolves a rule only to mesh axes not yet used in the same spec).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxlm.config import DistributedConfig, MeshConfig
from jaxlm.errors import JaxlmError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab_embed", "fsdp"),  # the LSTM's token-embedding width (model.embed_dim)
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("gates", "tensor"),  # the LSTM's 4 x hidden gate axis
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("layers", None),  # scan_layers' stacking axis
)


def rules_summary() -> dict[str, Any]:
    """LOGICAL_RULES as {logical name: mesh axes}, for logs."""
    return {name: axes for name, axes in LOGICAL_RULES if axes is not None}


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


@contextlib.contextmanager
def activation_mesh(mesh: Mesh) -> Iterator[None]:
    """While tracing a step: `constrain` calls in the models resolve to shardings on `mesh`
    (outside this context they are no-ops, so a bare `model.apply` runs anywhere)."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        yield


def constrain(x: jax.Array, logical_axes: tuple[Optional[str], ...]) -> jax.Array:
    """A sharding constraint by logical axis names, through LOGICAL_RULES.

    The rules are passed here rather than through flax's `logical_axis_rules` context: under
    that context flax also constrains parameter initializers (e.g. DenseGeneral's flattened
    kernel), which `apply` re-traces to check shapes and which then fails on rank."""
    return nn.with_logical_constraint(x, logical_axes, rules=LOGICAL_RULES)


def logical_sharding(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of LogicallyPartitioned leaves (e.g. from jax.eval_shape(init))."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, LOGICAL_RULES)


def logical_spec(logical_axes: tuple[Optional[str], ...]) -> PartitionSpec:
    """The PartitionSpec of an array with these logical axes, through LOGICAL_RULES."""
    return nn.logical_to_mesh_axes(logical_axes, LOGICAL_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """(batch, length) arrays: batch split over data and fsdp."""
    return NamedSharding(mesh, logical_spec(("batch", "length")))


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """(batch,) arrays (labels, row masks): split like the batch."""
    return NamedSharding(mesh, logical_spec(("batch",)))


def put_batch(mesh: Mesh, batch: dict[str, np.ndarray], global_batch: int
              ) -> dict[str, jax.Array]:
    """This process's rows of a global batch (`local_rows`) -> global arrays on the mesh:
    (batch, length) arrays as `batch_sharding`, (batch,) arrays (labels) split the same way."""
    rows, two_d = rows_sharding(mesh), batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(two_d if v.ndim > 1 else rows, v,
                                                      (global_batch,) + v.shape[1:])
            for k, v in batch.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def tensor_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["tensor"]


def local_rows(mesh: Mesh, global_batch: int) -> slice:
    """The rows of a (global_batch, ...) batch that this process's devices hold under
    `batch_sharding(mesh)`: the slice each process feeds to `make_array_from_process_local_data`."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch, 1))
    starts = sorted({idx[0].indices(global_batch)[:2] for idx in index_map.values()})
    lo, hi = starts[0][0], starts[-1][1]
    covered = sum(b - a for a, b in starts)
    if covered != hi - lo:  # e.g. a mesh whose data axis interleaves hosts
        raise JaxlmError(
            f"this process's devices hold non-contiguous batch rows {starts}; use a mesh whose "
            f"data/fsdp axes keep each host's devices together (the jax.make_mesh default)"
        )
    return slice(lo, hi)


def _cluster_detected() -> Optional[str]:
    """A multi-process launch that `jax.distributed.initialize()` can configure by itself."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return "SLURM"
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or "MEGASCALE_COORDINATOR_ADDRESS" in env:
        return "a Cloud TPU pod slice"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    return None


def initialize_distributed(cfg: DistributedConfig) -> Optional[str]:
    """Calls `jax.distributed.initialize` when the config or the environment asks for several
    processes; a no-op on a single machine or when already initialized. Must run before anything
    touches a JAX device. Returns a description of what it did (None: single process)."""
    if jax.distributed.is_initialized():
        return "already initialized"
    if cfg.coordinator_address is not None:
        how = f"coordinator {cfg.coordinator_address}"
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    elif cfg.auto and (found := _cluster_detected()):
        how, kwargs = f"auto-detected {found}", {}
    else:
        return None
    try:
        jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout, **kwargs)
    except (RuntimeError, ValueError) as e:
        raise JaxlmError(
            f"jax.distributed.initialize failed ({how}): {str(e).splitlines()[0]}"
        ) from None
    return how
