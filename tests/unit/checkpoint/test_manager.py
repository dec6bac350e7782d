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


def test_a_failed_write_quiets_asyncio_unretrieved_errors(caplog):
    """After a checkpoint write failed (reported in one line), orbax's other failed asyncio
    futures must not print their tracebacks when collected; other asyncio errors still log."""
    import asyncio
    import gc
    import logging

    from jaxlm.checkpoint import manager

    def collect_a_failed_future() -> None:
        loop = asyncio.new_event_loop()
        fut = loop.create_future()
        fut.set_exception(OSError(27, "File too large"))
        del fut
        gc.collect()
        loop.close()

    logger = logging.getLogger("asyncio")
    logger.removeFilter(manager._UNRETRIEVED)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            collect_a_failed_future()
            assert "exception was never retrieved" in caplog.text  # Python's default
            caplog.clear()
            manager._quiet_unretrieved_write_failures()
            collect_a_failed_future()
            logger.error("another asyncio error")
        assert "never retrieved" not in caplog.text and "another asyncio error" in caplog.text
    finally:
        logger.removeFilter(manager._UNRETRIEVED)
