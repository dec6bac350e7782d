"""What a jaxlm command does to the process it runs in, which it owns (the library does none
of this: `import jaxlm` and its functions leave their host process as they found it)."""

from __future__ import annotations

import os
import pathlib
from typing import Optional

from jaxlm import paths


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
