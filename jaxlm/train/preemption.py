"""SIGTERM / SIGINT during training: finish the current step, checkpoint it, stop cleanly.

`StopSignals` installs handlers only for the duration of a `with` block (in the main thread;
elsewhere it is a no-op) and puts back whatever handlers were there before, so library users
calling `jaxlm.train` from Python or a notebook keep their own Ctrl-C behaviour afterwards.
The first signal only sets `requested`; the training loop polls it between steps. A second
signal stops at once (KeyboardInterrupt), leaving the previous checkpoint as the newest whole one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Callable, Optional

# The exit status of a run stopped by SIGTERM/SIGINT after saving its checkpoint: EX_TEMPFAIL
# from sysexits.h ("try again later"). 0 = finished, 2 = bad input, 3 = diverged (halted on a
# non-finite loss). Re-running the same command resumes.
EXIT_PREEMPTED = 75

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A stop signal during work that has nothing left to save (the final eval, sampling)."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopSignals:
    def __init__(self, log: Callable[[str], None] = lambda msg: None, immediate: bool = False):
        """`immediate`: the first signal raises `Preempted` at once (for work after the last
        checkpoint is committed, where there is nothing to finish first)."""
        self._log = log
        self._immediate = immediate
        self._previous: dict[int, object] = {}
        self.requested: Optional[str] = None  # the signal's name once one arrived

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self._immediate:
            self.requested = name
            raise Preempted(name)
        if self.requested is not None:
            self._log(f"jaxlm: second {name}: stopping now, without a new checkpoint")
            raise KeyboardInterrupt
        self.requested = name
        self._log(f"jaxlm: {name} received: saving a checkpoint after this step, then stopping "
                  f"(send it again to stop at once)")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
