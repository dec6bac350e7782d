"""How much CPU other processes used while a benchmark timed something.

A shared 2-core machine gives numbers that depend on who else is running, and not equally for
every contender: PyTorch's OpenMP threads slow down far more than XLA's when cores are busy, so
a ratio measured under load can be off by 4x. Each timed run is wrapped in `meter.timed()`,
which reads the machine's busy CPU time (/proc/stat) and this process's own CPU time (all its
threads, and children it has waited for) before and after: others' cores = (machine busy -
own) / wall. `append_results` refuses to write a section whose timed runs saw others use more
than `LIMIT_CORES` altogether, or more than `RUN_LIMIT_CORES` in any one run.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

LIMIT_CORES = 0.10  # "a quiet machine": others used at most a tenth of one core on average
RUN_LIMIT_CORES = 0.5  # and no single timed run saw half a core of others' work


def _busy_seconds() -> Optional[float]:
    """The machine's busy CPU seconds since boot (all cores), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class LoadMeter:
    """Collects, per timed run, the cores other processes kept busy during it."""

    others_cores: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)  # seconds of each timed run

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        busy0, own0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        yield
        busy1, own1, wall = _busy_seconds(), _own_seconds(), time.perf_counter() - t0
        if busy0 is not None and busy1 is not None and wall > 0:
            # jiffies tick at 100 Hz: a short run's estimate is coarse but unbiased; clamp at 0
            self.others_cores.append(max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall))
            self.walls.append(wall)

    @property
    def worst(self) -> Optional[float]:
        return max(self.others_cores) if self.others_cores else None

    @property
    def overall(self) -> Optional[float]:
        """Others' cores over all timed runs together (CPU-seconds / wall seconds): a short
        run's own estimate moves by a tick (10 ms) over its length, this one does not."""
        if not self.others_cores:
            return None
        walls = self.walls if len(self.walls) == len(self.others_cores) else [1.0] * len(
            self.others_cores)
        return sum(c * w for c, w in zip(self.others_cores, walls)) / sum(walls)

    def quiet(self, limit: float = LIMIT_CORES, run_limit: float = RUN_LIMIT_CORES) -> bool:
        return self.overall is not None and self.overall <= limit and self.worst <= run_limit

    def line(self) -> str:
        """'other processes used 0.01 cores (median; max 0.03) over 6 timed runs'."""
        if not self.others_cores:
            return "other processes' CPU use: not measured (no /proc/stat)"
        return (f"other processes used {self.overall:.2f} cores over {len(self.others_cores)} "
                f"timed runs (per run: median {statistics.median(self.others_cores):.2f}, max "
                f"{self.worst:.2f})")
