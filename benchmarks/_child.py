"""Runs a benchmark's child process to its end, stamping each line it prints and each record it
appends to a JSON-lines file with (seconds since launch, the child's CPU seconds then): what a
peer benchmark needs to time another program's steps from outside (bench_vs_nanogpt)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import threading
import time
from typing import Optional


@dataclasses.dataclass
class Child:
    """A finished run: its output lines and JSON-lines records, each stamped with (seconds since
    launch, the child's CPU seconds then or None), its whole CPU time (wait4) and wall time."""
    lines: list = dataclasses.field(default_factory=list)  # (t, cpu, text)
    records: list = dataclasses.field(default_factory=list)  # (t, cpu, record)
    cpu_total: float = 0.0
    wall: float = 0.0


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system seconds of a running process (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_child(cmd: list[str], cwd: pathlib.Path, env: dict[str, str],
              metrics: Optional[pathlib.Path] = None) -> Child:
    """Runs `cmd` to its end, stamping each output line (stdout and stderr; tqdm's \\r updates
    are lines too) and each new record of the JSON-lines file `metrics` (polled every 20 ms) as
    it appears. Raises RuntimeError with the last lines when the child exits non-zero."""
    child, done = Child(), threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")

    def stamp() -> tuple[float, Optional[float]]:
        return time.perf_counter() - t0, _cpu_seconds(proc.pid)

    def read_lines() -> None:
        for line in proc.stdout:
            child.lines.append((*stamp(), line.rstrip("\n")))

    def tail_metrics() -> None:
        pos, buf = 0, b""
        while True:
            finished = done.wait(0.02)
            if metrics.exists():
                with open(metrics, "rb") as f:
                    f.seek(pos)
                    buf += f.read()
                    pos = f.tell()
                *complete, buf = buf.split(b"\n")
                child.records += [(*stamp(), json.loads(x)) for x in complete if x.strip()]
            if finished:
                return

    threads = [threading.Thread(target=fn, daemon=True)
               for fn in ([read_lines] + ([tail_metrics] if metrics is not None else []))]
    for th in threads:
        th.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    child.wall, child.cpu_total = time.perf_counter() - t0, usage.ru_utime + usage.ru_stime
    done.set()
    for th in threads:
        th.join()
    proc.stdout.close()
    if proc.returncode != 0:
        tail = "\n".join(text for _, _, text in child.lines[-15:])
        raise RuntimeError(f"{' '.join(cmd[:2])} (in {cwd}) exited with {proc.returncode}:\n"
                           f"{tail}")
    return child
