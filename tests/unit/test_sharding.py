"""jaxlm.sharding on one device (the multi-device checks: tests/multidevice)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxlm import sharding
from jaxlm.config import MeshConfig
from jaxlm.errors import JaxlmError


def test_mesh_shape():
    assert sharding.mesh_shape(MeshConfig(), 1) == (1, 1, 1, 1)
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2), 8) == (4, 2, 1, 1)
    assert sharding.mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 1, 2)
    assert sharding.mesh_shape(MeshConfig(data=1, fsdp=2, context=-1), 8) == (1, 2, 4, 1)
    with pytest.raises(JaxlmError, match="mesh.data"):
        sharding.mesh_shape(MeshConfig(data=3), 4)
    with pytest.raises(JaxlmError):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3), 4)
    with pytest.raises(JaxlmError):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=-1), 4)
    with pytest.raises(JaxlmError, match="mesh.context"):
        sharding.mesh_shape(MeshConfig(data=1, context=3), 4)


def test_single_slice_mesh_is_jax_make_mesh():
    import jax

    mesh = sharding.make_mesh(MeshConfig())
    assert mesh.axis_names == sharding.MESH_AXES
    assert mesh.devices.shape == (jax.device_count(), 1, 1, 1)
    with pytest.raises(JaxlmError, match="mesh.dcn_data"):  # one slice has no DCN axis to split
        sharding.make_mesh(MeshConfig(dcn_data=2))


# ---------------------------------------------------------------------------------------------
# multi-slice meshes, on stand-in devices (jax.make_mesh refuses devices in several slices)


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    slice_index: int
    process_index: int = 0
    platform: str = "cpu"
    device_kind: str = "cpu"


def _slices(n_slices: int, per_slice: int, shuffle: bool = True) -> list[FakeDevice]:
    devs = [FakeDevice(s * per_slice + i, s, process_index=s)
            for s in range(n_slices) for i in range(per_slice)]
    if shuffle:  # jax.devices() need not list a slice's devices together
        devs = [devs[i] for i in np.random.default_rng(0).permutation(len(devs))]
    return devs


def _slice_grid(grid: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda d: d.slice_index)(grid)


def test_hybrid_mesh_puts_slices_on_the_dcn_data_axis():
    devs = _slices(2, 4)
    grid = sharding.hybrid_device_grid(MeshConfig(data=1, fsdp=2, tensor=2), devs)  # dcn_data=-1
    assert grid.shape == (2, 2, 1, 2)  # data = dcn_data 2 x data 1
    slices = _slice_grid(grid)
    assert (slices[0] == 0).all() and (slices[1] == 1).all()
    assert sorted(d.id for d in grid.flat) == list(range(8))


def test_hybrid_mesh_dcn_fsdp_and_ici_data():
    devs = _slices(4, 4)
    grid = sharding.hybrid_device_grid(
        MeshConfig(data=2, fsdp=2, dcn_data=2, dcn_fsdp=2), devs)
    assert grid.shape == (4, 4, 1, 1)
    slices = _slice_grid(grid)
    # slices are outermost on each DCN axis: a slice holds a contiguous 2x2 block
    for s in range(4):
        rows, cols = np.nonzero(slices == s)[:2]
        assert len(set(rows)) == 2 and len(set(cols)) == 2
        assert max(rows) - min(rows) == 1 and max(cols) - min(cols) == 1
    assert slices[0, 0, 0, 0] != slices[0, 2, 0, 0] != slices[2, 0, 0, 0]


def test_hybrid_mesh_context_within_a_slice():
    grid = sharding.hybrid_device_grid(MeshConfig(data=1, context=2, tensor=2), _slices(2, 4))
    assert grid.shape == (2, 1, 2, 2)
    assert (_slice_grid(grid)[1] == 1).all()


def test_hybrid_mesh_errors_name_the_keys():
    with pytest.raises(JaxlmError, match="mesh.dcn_data"):
        sharding.hybrid_device_grid(MeshConfig(dcn_data=3), _slices(2, 4))
    with pytest.raises(JaxlmError, match="mesh.tensor"):
        sharding.hybrid_device_grid(MeshConfig(data=1, tensor=8), _slices(2, 4))


def test_processes_stand_for_slices_when_devices_carry_none():
    """GPU nodes: no slice_index; asking for DCN axes lays the processes out along them."""
    devs = [FakeDevice(i, 0, process_index=i // 4, platform="gpu") for i in range(8)]
    grid = sharding.hybrid_device_grid(MeshConfig(data=4, dcn_data=2), devs)
    assert grid.shape == (8, 1, 1, 1)
    assert [d.process_index for d in grid.flat] == [0] * 4 + [1] * 4
    grid = sharding.hybrid_device_grid(MeshConfig(data=1, fsdp=4, dcn_fsdp=2), devs)
    assert grid.shape == (1, 8, 1, 1)  # dcn_data=-1: the one process pair left goes to fsdp
    assert [d.process_index for d in grid.flat] == [0] * 4 + [1] * 4
