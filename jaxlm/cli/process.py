"""What a jaxlm command does to the process it runs in, which it owns (the library does none
of this: `import jaxlm` and its functions leave their host process as they found it)."""

from __future__ import annotations

import ctypes
import os
import pathlib
from typing import Callable, Optional

from jaxlm import paths, xla_flags


def quiet_checkpoints() -> None:
    """Orbax's noise off the terminal for the rest of the process (jaxlm.checkpoint.reasons),
    called by the commands that read or write checkpoints once their arguments are checked
    (importing Orbax takes seconds)."""
    from jaxlm.checkpoint.reasons import quiet_orbax_process

    quiet_orbax_process()


CACHE_OFF = ("0", "false", "off", "no")


def compilation_cache() -> Optional[pathlib.Path]:
    """JAX's persistent compilation cache, on: a second run of the same shapes loads its
    compiled steps instead of compiling them again (quickstart: seconds off every start).

    In $XDG_CACHE_HOME/jaxlm/xla/HOST (jaxlm.paths: one folder per kind of CPU, as XLA compiles
    CPU code for the host's features); JAX keys each entry by the program, jax/jaxlib and
    backend versions, XLA flags and devices, so a stale entry is never used. Left alone when the
    user set a cache (JAX_COMPILATION_CACHE_DIR, jax.config) and off with
    JAXLM_COMPILATION_CACHE=0; a folder that cannot be created turns it off, silently."""
    if os.environ.get("JAXLM_COMPILATION_CACHE", "1").strip().lower() in CACHE_OFF:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own
        return None
    path = paths.user_cache_dir("xla", paths.host_tag())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX's default (1 s) leaves out the eval step and the small jitted helpers, which
        # together cost about as much as the train step at startup
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    return path


MALLOC_ENV = "JAXLM_MALLOC_TUNING"  # 1 (default) | 0: glibc's malloc as it comes
# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOPT_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))


def _glibc_mallopt() -> Optional[Callable[[int, int], int]]:
    """glibc's mallopt, or None where the C library is not glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> bool:
    """glibc's malloc set to keep the memory it frees for reuse, for a process whose JAX runs on
    the CPU: one arena, no mmap for big blocks, no trimming. Returns whether it was set.

    XLA:CPU allocates each execution's temporary buffer (the quickstart train step: 170 MB per
    device) and frees it afterwards. glibc serves a block that big with mmap (from a worker
    thread's arena it has no other choice) and unmaps it when freed, so every step faulted all
    its pages in again: 83k page faults and ~160 ms of kernel time per quickstart step, a
    quarter of its CPU time (benchmarks/RESULTS.md). Kept in one arena's heap, the block is
    reused. The process's memory then stays at its peak until it exits.

    Only before JAX starts its backends (a running thread keeps its arena), on glibc, when JAX
    runs on the CPU only; `JAXLM_MALLOC_TUNING=0` leaves malloc alone."""
    if environ.get(MALLOC_ENV, "1").strip().lower() in CACHE_OFF:
        return False
    if not xla_flags.cpu_only(environ) or xla_flags.backends_started():
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOPT_SETTINGS)
