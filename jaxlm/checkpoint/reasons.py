"""Orbax failures as one line each, and Orbax's own noise (logged tracebacks, warnings about
routine things, unraisable errors of abandoned writes) kept off the user's terminal."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


def read_reason(e: BaseException) -> str:
    """Why a restore failed, in a line: the TensorStore error under Orbax's wrapper (which only
    names the array slice), without its spec dump."""
    while (e.__cause__ is not None and "TensorStore" in str(e)
           and not isinstance(e, (json.JSONDecodeError, OSError))):
        e = e.__cause__
    line = first_line(e).split(" [tensorstore_spec")[0]
    return f"{type(e).__name__}: {line}" if isinstance(e, json.JSONDecodeError) else line


def os_reason(e: BaseException) -> str:
    """'No space left on device [errno 28]' for an OS-level write failure (TensorStore reports
    those inside a long message), else the message's first line."""
    if isinstance(e, OSError) and e.errno:
        return f"{e.strerror or os.strerror(e.errno)} [errno {e.errno}]"
    m = re.search(r"os_error_code='?(\d+)", str(e))
    if m:
        return f"{os.strerror(int(m.group(1)))} [errno {m.group(1)}]"
    return first_line(e)


class _QuietOrbax(logging.Filter):
    """Drops Orbax's own log records. It logs every failure it then raises, with tracebacks,
    and warns about routine things (a save without eval metrics); jaxlm reports what Orbax
    raises as one line instead. Also drops asyncio's reports of Orbax's abandoned writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname.replace("\\", "/"):
            return False
        if record.name != "asyncio":
            return True
        text = record.getMessage()
        return not ("/orbax/" in text or "tensorstore_spec" in text)


_QUIET = _QuietOrbax()


def _from_orbax(unraisable: Any) -> bool:
    """An unraisable error left behind by a failed Orbax read or write: 'Event loop is closed'
    from TensorStore callbacks into Orbax's closed loop, or Orbax coroutines dropped with their
    error (printed as tracebacks at random moments, even at exit, after jaxlm reported it)."""
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename.replace("\\", "/"):
        return True
    tb = unraisable.exc_traceback
    while tb is not None:
        if "/orbax/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


class quiet_orbax:  # noqa: N801 - used as a function: `with quiet_orbax(): ...`
    """Keeps Orbax's noise off the terminal while the `with` block runs: the log filter above on
    the absl and asyncio loggers, and an unraisable hook that drops what `_from_orbax` names
    (and hands everything else to the hook it replaced). On exit, what it installed is removed
    and the previous hook restored (unless someone replaced ours meanwhile): a library call does
    not change its host process. Nested blocks install nothing more. Calling `quiet_orbax()`
    without `with` does nothing; a program that owns its process uses `quiet_orbax_process`."""

    def __init__(self) -> None:
        self._filtered: list[logging.Logger] = []
        self._hook: Any = None
        self._previous: Any = None

    def __enter__(self) -> "quiet_orbax":
        for name in ("absl", "asyncio"):
            logger = logging.getLogger(name)
            if _QUIET not in logger.filters:
                logger.addFilter(_QUIET)
                self._filtered.append(logger)
        if not getattr(sys.unraisablehook, "_jaxlm", False):
            self._previous = previous = sys.unraisablehook

            def hook(unraisable: Any) -> None:
                if not _from_orbax(unraisable):
                    previous(unraisable)

            hook._jaxlm = True  # type: ignore[attr-defined]
            self._hook = sys.unraisablehook = hook
        return self

    def __exit__(self, *exc: Any) -> None:
        for logger in self._filtered:
            logger.removeFilter(_QUIET)
        self._filtered = []
        if self._hook is not None and sys.unraisablehook is self._hook:
            sys.unraisablehook = self._previous
        self._hook = self._previous = None


def quiet_orbax_process() -> None:
    """`quiet_orbax` for the rest of the process, for a program that owns it (the jaxlm
    command line): Orbax's abandoned writes can report errors as late as interpreter exit."""
    quiet_orbax().__enter__()
