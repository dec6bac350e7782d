"""Progress on stderr, the one place jaxlm makes progress bars: a tqdm bar with ETA when stderr
is a terminal (or a Jupyter kernel draws it), plain lines when it is not (a log file, a pipe, a
batch system): one line every `PLAIN_EVERY_SEC` seconds and one at the end, no carriage returns
or cursor codes."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from tqdm.auto import tqdm

PLAIN_EVERY_SEC = 30.0  # how often a plain-line bar reports


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether a redrawn bar is readable on `stream` (default stderr): a terminal, or a
    notebook (tqdm.auto draws a widget there; a kernel's stderr is no terminal)."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return _in_notebook_kernel()


def _in_notebook_kernel() -> bool:
    """Running inside a Jupyter kernel (not merely a process that imported ipykernel, as a test
    runner that drives notebooks does)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython too old or half-imported: not a kernel
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainProgress:
    """tqdm's interface as jaxlm uses it (update, set_postfix, close, n), as plain lines:
    `desc: 300/1000 steps (30%), 12.5 steps/s, 0:56 elapsed, 1:36 left | loss=2.31`."""

    def __init__(self, total: Optional[int], initial: int = 0, desc: str = "",
                 unit: str = "it", leave: bool = True, every: float = PLAIN_EVERY_SEC,
                 file: Optional[TextIO] = None):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.leave, self.every = leave, every
        self.file = file
        self._initial, self._start = initial, time.monotonic()
        self._last_line, self._lines, self._postfix = self._start, 0, ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last_line >= self.every:
            self._line()

    def set_postfix(self, postfix: Optional[dict] = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(postfix or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def _line(self, final: bool = False) -> None:
        now = time.monotonic()
        self._last_line, self._lines = now, self._lines + 1
        elapsed, done = now - self._start, self.n - self._initial
        units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {count} {units}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:,.0f} {units}/s" if rate >= 100 else f", {rate:.3g} {units}/s"
        text += f", {_duration(elapsed)} elapsed"
        if not final and self.total and done > 0 and self.n < self.total:
            text += f", {_duration((self.total - self.n) * elapsed / done)} left"
        if self._postfix:
            text += f" | {self._postfix}"
        print(text, file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave or self._lines:  # a short transient bar (eval) leaves no line
            if self.n > self._initial or self._lines:
                self._line(final=True)

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: Optional[int], initial: int = 0, desc: str = "train", enabled: bool = True,
             unit: str = "step", leave: bool = True) -> Any:
    """A progress bar on stderr: tqdm with ETA on a terminal, `PlainProgress` lines otherwise,
    nothing when not `enabled`."""
    if enabled and not interactive():
        return PlainProgress(total, initial=initial, desc=desc, unit=unit, leave=leave)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, mininterval=1.0, leave=leave)


def log(msg: str, enabled: bool = True) -> None:
    """A status line on stderr that does not break a progress bar."""
    if enabled:
        tqdm.write(msg, file=sys.stderr)


__all__ = ["progress", "log", "interactive", "PlainProgress", "PLAIN_EVERY_SEC"]
