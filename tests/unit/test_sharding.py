"""jaxlm.sharding on one device (the multi-device checks: tests/multidevice)."""

from __future__ import annotations

import pytest

from jaxlm import sharding
from jaxlm.config import MeshConfig
from jaxlm.errors import JaxlmError


def test_mesh_shape():
    assert sharding.mesh_shape(MeshConfig(), 1) == (1, 1, 1)
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2), 8) == (4, 2, 1)
    assert sharding.mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(JaxlmError):
        sharding.mesh_shape(MeshConfig(data=3), 4)
    with pytest.raises(JaxlmError):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3), 4)
    with pytest.raises(JaxlmError):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=-1), 4)
