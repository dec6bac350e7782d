"""jaxlm.checkpoint.reasons: Orbax's noise is kept off the terminal only while jaxlm works, and
the host process's hooks and log filters are as they were afterwards (issue 21.18)."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from jaxlm.checkpoint import Checkpointer, reasons
from jaxlm.checkpoint.reasons import quiet_orbax

LOGGERS = ("absl", "asyncio")


def _process_state() -> tuple:
    return sys.unraisablehook, {n: list(logging.getLogger(n).filters) for n in LOGGERS}


def _orbax_unraisable() -> types.SimpleNamespace:
    return types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError(
        "Event loop is closed"), exc_traceback=None, err_msg=None, object=None)


def test_creating_and_closing_a_checkpointer_leaves_the_process_alone(tmp_path):
    before = _process_state()
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert _process_state() == before
    ckpt.close()
    assert _process_state() == before


@pytest.fixture
def unquieted():
    """This process as a library user's would be: an in-process jaxlm command earlier in the
    test session (cli.main) quiets Orbax for the whole process, as commands do."""
    loggers = [logging.getLogger(n) for n in LOGGERS]
    had = [reasons._QUIET in lg.filters for lg in loggers]
    for lg in loggers:
        lg.removeFilter(reasons._QUIET)
    yield
    for lg, h in zip(loggers, had):
        if h:
            lg.addFilter(reasons._QUIET)


def test_quiet_orbax_drops_orbax_noise_inside_and_restores_on_exit(unquieted):
    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = mine = seen.append
    try:
        before = _process_state()
        with quiet_orbax():
            assert sys.unraisablehook is not mine
            with quiet_orbax():  # nested: nothing more installed, nothing removed early
                pass
            assert all(len(logging.getLogger(n).filters) == len(before[1][n]) + 1
                       for n in LOGGERS)
            sys.unraisablehook(_orbax_unraisable())  # dropped
            other = types.SimpleNamespace(exc_value=ValueError("mine"), exc_traceback=None,
                                          object=None)
            sys.unraisablehook(other)  # handed on to the hook it replaced
        assert seen == [other]
        assert _process_state() == before
    finally:
        sys.unraisablehook = previous


def test_quiet_orbax_keeps_a_hook_installed_meanwhile():
    """Someone else replaced the hook inside the block: theirs stays."""
    previous = sys.unraisablehook
    try:
        with quiet_orbax():
            sys.unraisablehook = theirs = lambda u: None
        assert sys.unraisablehook is theirs
    finally:
        sys.unraisablehook = previous
