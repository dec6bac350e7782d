"""jaxlm.checkpoint.manager: the Checkpointer."""

from __future__ import annotations

import jax
import pytest

from jaxlm.errors import NonFiniteError
from jaxlm.checkpoint import Checkpointer


def test_checkpointer_refuses_nonfinite_state(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    try:
        with pytest.raises(NonFiniteError, match="non-finite"):
            ckpt.save(1, {"w": jax.numpy.array([1.0, float("nan")])})
    finally:
        ckpt.close()
    assert ckpt.all_steps() == []
