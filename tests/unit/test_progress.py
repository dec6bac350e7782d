"""jaxlm.progress: a tqdm bar on a terminal, plain lines anywhere else (issue 21.15)."""

from __future__ import annotations

import sys

import io

from tqdm.auto import tqdm

from jaxlm import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_only_on_a_terminal():
    assert progress.interactive(_Terminal())
    assert not progress.interactive(io.StringIO())
    assert not progress.interactive(object())  # no isatty at all


def test_not_a_terminal_gets_plain_lines(capsys, monkeypatch):
    """stderr captured (a file, a pipe): every bar jaxlm makes writes whole lines, without
    carriage returns or cursor codes, and says where it is."""
    monkeypatch.setattr(progress, "PLAIN_EVERY_SEC", 0.0)
    bar = progress.progress(4, initial=1, desc="train", unit="step")
    assert isinstance(bar, progress.PlainProgress)
    bar.every = 0.0  # a line at every update
    for _ in range(3):
        bar.update(1)
        bar.set_postfix({"loss": "2.310"}, refresh=False)
    bar.close()
    bar.close()  # once only
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("train: 2/4 steps (50%)") and " left" in lines[0]
    assert lines[-1].startswith("train: 4/4 steps (100%)") and "loss=2.310" in lines[-1]
    assert len(lines) == 4  # three updates and the end


def test_a_short_transient_bar_leaves_nothing(capsys):
    bar = progress.progress(None, desc="eval", unit="batch", leave=False)
    bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""
    bar = progress.progress(None, desc="eval", unit="batch")  # kept: one line at the end
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err.startswith("eval: 2 batches, ")


def test_a_disabled_bar_is_silent_and_a_terminal_gets_tqdm(capsys, monkeypatch):
    bar = progress.progress(3, enabled=False)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "interactive", lambda stream=None: True)
    bar = progress.progress(3, enabled=True)
    assert isinstance(bar, tqdm)
    bar.close()


def test_a_process_that_imported_ipykernel_is_not_a_notebook(monkeypatch):
    """A test runner that drives notebooks imports ipykernel and IPython; only a running kernel
    (get_ipython() is a ZMQInteractiveShell) draws tqdm's widget."""
    import io
    import types

    from jaxlm.progress import interactive

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: None
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert not interactive(io.StringIO())
    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})
    ipython.get_ipython = ZMQInteractiveShell
    assert interactive(io.StringIO())


def test_plain_progress_takes_a_postfix_string(capsys):
    from jaxlm.progress import PlainProgress

    bar = PlainProgress(2, desc="sweep", unit="run", every=0.0)
    bar.set_postfix_str("tiny-1", refresh=True)
    bar.update(1)
    bar.close()
    assert "tiny-1" in capsys.readouterr().err
