"""Run records: metrics.jsonl and TensorBoard event files (the progress bar: jaxlm.progress).

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Optional

from jaxlm.errors import JaxlmError
from jaxlm.progress import log, progress  # noqa: F401 - where callers find them
from jaxlm.rundir import METRICS_FILE, TENSORBOARD_DIR  # the run directory owns the names


def _clean(v: Any) -> Any:
    v = float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int, str)) else v
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def _write_error(path: pathlib.Path, e: OSError) -> JaxlmError:
    reason = f"{e.strerror or os.strerror(e.errno)} [errno {e.errno}]" if e.errno else str(e)
    return JaxlmError(f"could not write {path}: {reason}; the run stopped, its checkpoints are "
                      f"intact: make room and re-run the same command to resume")


def _read_records(path: pathlib.Path) -> tuple[list[tuple[bytes, dict]], list[int]]:
    """(raw line, record) of each whole JSON line, and the 1-based numbers of the lines that are
    not (cut short by a crash or a full disk, or not UTF-8)."""
    records, damaged = [], []
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            damaged.append(i)
            continue
        if isinstance(rec, dict):
            records.append((line, rec))
        else:
            damaged.append(i)
    return records, damaged


def _tensorboardx() -> Any:
    """tensorboardX's event-file writer, protos and scalar summary, as a namespace.

    tensorboardX's package __init__ imports torch when it is installed (Colab, any machine with
    the test extra): 1-2 s of every run's start for features jaxlm does not use. The modules
    jaxlm needs do not use torch, so they are loaded with the package's __init__ skipped; the
    package entry is then removed again, so a later `import tensorboardX` is the real one."""
    import importlib
    import importlib.util
    import types

    names = ("event_file_writer", "proto.event_pb2", "summary")
    shell = None
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        spec = importlib.util.find_spec("tensorboardX")
        if spec is not None and spec.submodule_search_locations:
            shell = importlib.util.module_from_spec(spec)  # its __path__, __init__ not run
            sys.modules["tensorboardX"] = shell
    try:
        mods = [importlib.import_module(f"tensorboardX.{n}") for n in names]
    finally:
        if shell is not None and sys.modules.get("tensorboardX") is shell:
            del sys.modules["tensorboardX"]
    return types.SimpleNamespace(EventsWriter=mods[0].EventsWriter, event_pb2=mods[1],
                                 scalar=mods[2].scalar)


class _Events:
    """TensorBoard scalars, written in the calling thread. tensorboardX's SummaryWriter writes
    from a thread of its own, where a full disk is a traceback the run cannot turn into its one
    line (and then another one at close)."""

    FLUSH_SECS = 10.0

    def __init__(self, logdir: pathlib.Path):
        self._tbx = _tensorboardx()
        try:
            logdir.mkdir(parents=True, exist_ok=True)
            self._w = self._tbx.EventsWriter(str(logdir / "events"))
        except OSError as e:
            raise _write_error(logdir, e) from None
        self.path = pathlib.Path(getattr(self._w, "_file_name", logdir))  # for messages
        self._flushed = time.monotonic()

    def scalars(self, values: dict[str, float], step: int) -> None:
        tbx = self._tbx
        now = time.time()
        for k, v in values.items():
            self._w.write_event(tbx.event_pb2.Event(wall_time=now, step=step,
                                                    summary=tbx.scalar(k, v)))
        if time.monotonic() - self._flushed >= self.FLUSH_SECS:
            self.flush()

    def flush(self) -> None:
        self._w.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._w.close()


class MetricsWriter:
    """metrics.jsonl (each record one whole line: a failed write is cut back off) and the
    TensorBoard event file. A failed write (a full disk) raises a one-line JaxlmError."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self._tb: Optional[_Events] = None
        self._file: Optional[Any] = None  # metrics.jsonl, opened at the first write
        self._failed = False
        if enabled:
            self._tb = _Events(pathlib.Path(workdir) / TENSORBOARD_DIR)

    def truncate_after(self, step: int,
                       warn: Optional[Callable[[str], None]] = None) -> None:
        """Drops step records past `step` (written after the checkpoint a resume starts from),
        and lines that are not whole JSON records (`warn` says how many)."""
        if not self.enabled or not self.path.exists():
            return
        self._close_file()
        try:
            records, damaged = _read_records(self.path)
        except OSError as e:
            raise JaxlmError(f"cannot read {self.path}: {e.strerror or e}") from None
        if damaged:
            (warn or log)(f"jaxlm: warning: dropped {len(damaged)} damaged line(s) of {self.path} "
                          f"(line {', '.join(map(str, damaged[:5]))}"
                          f"{', ...' if len(damaged) > 5 else ''}: cut short or not UTF-8 JSON)")
        keep = [line for line, rec in records
                if not isinstance(rec.get("step"), (int, float)) or rec["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        try:
            tmp.write_bytes(b"".join(k + b"\n" for k in keep))
            tmp.replace(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_error(self.path, e) from None

    def write(self, record: dict[str, Any]) -> None:
        """Appends one JSON line; numeric fields of step records also go to TensorBoard."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        self._append((json.dumps(record) + "\n").encode("utf-8"))
        step = record.get("step")
        if self._tb is not None and isinstance(step, int):
            values = {tensorboard_tag(k): v for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            try:
                self._tb.scalars(values, step)
            except OSError as e:
                self._failed = True
                raise _write_error(self._tb.path, e) from None

    def _append(self, data: bytes) -> None:
        """One whole line or nothing: on a failed write the file is cut back to where it was."""
        try:
            if self._file is None:
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
            start = self._file.seek(0, os.SEEK_END)
            view = memoryview(data)
            try:
                while view:
                    view = view[self._file.write(view):]
            except OSError:
                self._file.truncate(start)
                raise
        except OSError as e:
            self._failed = True
            raise _write_error(self.path, e) from None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Flushes TensorBoard; after a failed write, only releases the files (that error is
        the one to report)."""
        self._close_file()
        if self._tb is None:
            return
        tb, self._tb = self._tb, None
        try:
            tb.close()
        except OSError as e:
            if not self._failed:
                raise _write_error(tb.path, e) from None


_PERF_KEYS = ("tokens_per_sec", "step_time_sec", "mfu", "compile_time_sec", "tokens_seen")


def tensorboard_tag(key: str) -> str:
    """TensorBoard groups: eval/*, perf/* (throughput, step time, MFU, compile) and train/*."""
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_"):]
    return ("perf/" if key in _PERF_KEYS else "train/") + key


def load_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """The records of metrics.jsonl (lines that are not whole JSON records are left out)."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [rec for _, rec in _read_records(path)[0]]


__all__ = ["MetricsWriter", "progress", "log", "load_metrics", "tensorboard_tag", "METRICS_FILE"]
