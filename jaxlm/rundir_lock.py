"""Holding a run directory: `prepare` (create it, check it is writable) and `lock` (one training
process at a time). Re-exported by jaxlm.rundir, the owner of the run-directory format."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import pathlib
import socket
from typing import Iterator

from jaxlm.errors import JaxlmError

LOCK_FILE = ".lock"  # held by the process that trains in the directory


def prepare(workdir: pathlib.Path) -> None:
    """Creates `workdir` and checks that this process can write in it."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"  # per process: hosts share workdirs
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise JaxlmError(f"workdir {workdir} is not writable: {e.strerror}") from None


@contextlib.contextmanager
def lock(workdir: pathlib.Path, enabled: bool = True) -> Iterator[None]:
    """Holds `workdir` for one training process: a second one is refused with a line naming
    the holder. An flock, which the kernel releases when the process ends however it ends, so
    a killed run never blocks its resume. Multi-host runs lock once (`enabled` on process 0)."""
    if not enabled:
        yield
        return
    path = workdir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise JaxlmError(f"cannot create the lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise JaxlmError(f"run directory {workdir} is in use by another training process "
                         f"({holder}); wait for it to end, or use another --workdir") from None
    try:
        os.ftruncate(fd, 0)
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode())
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
