"""Device mesh and the one table mapping logical axis names to mesh axes.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism that also shards parameters
and optimizer state), `context` (activations split along the sequence; attention all-gathers
keys and values, `models.context_attention`), `tensor` (heads, MLP width and vocabulary split
across devices). An activation's `embed` axis is left unsharded when `fsdp` is already taken by
its batch axis (flax resolves a rule only to mesh axes not yet used in the same spec).

Multi-slice (hybrid) meshes, as in MaxText: `mesh.data/fsdp/context/tensor` size the axes
within one slice (ICI), `mesh.dcn_data/dcn_fsdp` across slices (DCN); each mesh axis is the
product, slices outermost, so a slice holds a contiguous block of the data/fsdp axes and only
the gradient reduction crosses the slow network. One slice: the mesh `jax.make_mesh` builds.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxlm.config import DistributedConfig, MeshConfig
from jaxlm import xla_flags
from jaxlm.errors import JaxlmError

MESH_AXES = ("data", "fsdp", "context", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab_embed", "fsdp"),  # the LSTM's token-embedding width (model.embed_dim)
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("gates", "tensor"),  # the LSTM's 4 x hidden gate axis
    ("vocab", "tensor"),
    ("length", "context"),
    ("head_dim", None),
    ("layers", None),  # scan_layers' stacking axis
)


def rules_summary() -> dict[str, Any]:
    """LOGICAL_RULES as {logical name: mesh axes}, for logs."""
    return {name: axes for name, axes in LOGICAL_RULES if axes is not None}


def _resolve(sizes: dict[str, int], total: int, what: str) -> tuple[int, ...]:
    """`sizes` {config key: size, -1 = the rest} whose product must be `total` (`what`)."""
    keys = ", ".join(sizes)
    unknown = [k for k, v in sizes.items() if v == -1]
    if len(unknown) > 1:
        raise JaxlmError(f"at most one of {keys} may be -1")
    known = math.prod(v for v in sizes.values() if v != -1)
    shown = "x".join(str(v) for v in sizes.values())
    if unknown:
        if total % known:
            raise JaxlmError(f"mesh sizes {shown} ({keys}) do not divide {total} {what}")
        sizes = {**sizes, unknown[0]: total // known}
    if math.prod(sizes.values()) != total:
        product = "*".join(sizes)
        raise JaxlmError(f"{product} = {math.prod(sizes.values())} but there are {total} {what}")
    return tuple(sizes.values())


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int, int]:
    """(data, fsdp, context, tensor) within one slice of `n_devices`; resolves -1; raises
    JaxlmError naming the keys when the sizes do not fit."""
    return _resolve({"mesh.data": cfg.data, "mesh.fsdp": cfg.fsdp, "mesh.context": cfg.context,
                     "mesh.tensor": cfg.tensor}, n_devices, "devices")  # type: ignore[return-value]


def dcn_shape(cfg: MeshConfig, n_slices: int) -> tuple[int, int, int, int]:
    """(data, fsdp, context, tensor) across `n_slices` slices: only data and fsdp cross them."""
    data, fsdp = _resolve({"mesh.dcn_data": cfg.dcn_data, "mesh.dcn_fsdp": cfg.dcn_fsdp},
                          n_slices, "slices")
    return data, fsdp, 1, 1


def _granule(cfg: MeshConfig, devices: Sequence[Any]) -> tuple[str, int]:
    """What a DCN unit is (`slice_index`, or `process_index` where devices carry no slice, e.g.
    GPU nodes) and how many there are: one unless the devices span several slices or the config
    asks for DCN axes."""
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) > 1:
        return "slice_index", len(slices)
    asked = cfg.dcn_data > 1 or cfg.dcn_fsdp > 1
    processes = {getattr(d, "process_index", 0) for d in devices}
    if asked and len(processes) > 1:
        return "process_index", len(processes)
    return "slice_index", 1


def hybrid_device_grid(cfg: MeshConfig, devices: Sequence[Any]) -> np.ndarray:
    """The (data, fsdp, context, tensor) array of `devices` (objects with `slice_index` or
    `process_index`, `platform`, `device_kind`) for a multi-slice mesh, from JAX's
    `create_hybrid_device_mesh`: ICI axes laid out within each slice, slices along DCN axes."""
    key, n_slices = _granule(cfg, devices)
    dcn = dcn_shape(cfg, n_slices)
    per_slice = len(devices) // n_slices
    if per_slice * n_slices != len(devices):
        raise JaxlmError(f"{len(devices)} devices do not split evenly into {n_slices} slices")
    ici = mesh_shape(cfg, per_slice)
    try:
        return mesh_utils.create_hybrid_device_mesh(
            ici, dcn, devices, process_is_granule=key == "process_index",
            allow_split_physical_axes=True)
    except ValueError as e:
        raise JaxlmError(f"cannot lay out the mesh {ici} within slices x {dcn} across "
                         f"{n_slices} slices: {str(e).splitlines()[0]}") from None


def devices_for_batch(cfg: MeshConfig, rows: int) -> Optional[list]:
    """The devices a run's mesh spans: all (None), except on the CPU devices jaxlm split the
    machine into (`xla_flags.cpu_device_flags`) under the default mesh, where it is the most of
    them that divide the `rows` of one (micro)batch: a batch of 6 on 4 such devices trains on 3,
    not an error the user never asked for."""
    n = xla_flags.auto_cpu_devices()
    devices = jax.devices()
    if not n or len(devices) != n or devices[0].platform != "cpu" or cfg != MeshConfig():
        return None
    used = max(k for k in range(1, n + 1) if rows % k == 0)
    return None if used == n else devices[:used]


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """The run's mesh over `devices` (default: all). One slice: `jax.make_mesh`'s layout."""
    devices = list(devices if devices is not None else jax.devices())
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if _granule(cfg, devices)[1] > 1:
        return Mesh(hybrid_device_grid(cfg, devices), MESH_AXES, axis_types=axis_types)
    dcn_shape(cfg, 1)  # the DCN keys must fit one slice
    shape = mesh_shape(cfg, len(devices))
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


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


def context_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["context"]


def length_shards() -> tuple[Optional[str], int]:
    """While tracing under `activation_mesh`: the mesh axis the `length` axis is split over and
    its size ((None, 1) outside a mesh or when length is not split)."""
    mesh = jax.sharding.get_abstract_mesh()
    axis = logical_spec(("length",))[0]
    if mesh.empty or axis is None or mesh.shape.get(axis, 1) == 1:
        return None, 1
    return axis, mesh.shape[axis]


def local_rows(mesh: Mesh, global_batch: int) -> slice:
    """The rows of a (global_batch, ...) batch that this process's devices hold under
    `batch_sharding(mesh)`: the slice each process feeds to `make_array_from_process_local_data`."""
    index_map = rows_sharding(mesh).addressable_devices_indices_map((global_batch,))
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
