"""jaxlm.train.preemption: the stop-signal handlers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from jaxlm.train.preemption import StopSignals


def test_stop_signals_handlers():
    """The first signal only asks to stop; a second stops at once; previous handlers come back;
    off the main thread (where handlers cannot be set) it does nothing."""
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous
    installed = []
    worker = threading.Thread(
        target=lambda: installed.append(dict(StopSignals().__enter__()._previous)))
    worker.start()
    worker.join()
    assert installed == [{}]
