"""XLA flags jaxlm sets by default (before JAX starts its backends), each with the reason.

They are GPU flags: XLA ignores them on CPU and TPU. A flag already in XLA_FLAGS is left as the
user set it, and JAXLM_XLA_DEFAULTS=0 turns all of them off. They are set where a jaxlm run
starts, never on import: by the command line (`jaxlm ...`, `python train.py`) before anything
starts JAX, and by `jaxlm.train` when JAX's backends have not started yet. Every flag here is
checked to parse with the installed jaxlib by tests/unit/test_xla_flags.py (XLA aborts the
process on an unknown flag).
"""

from __future__ import annotations

import os

DEFAULT_FLAGS: dict[str, tuple[str, str]] = {
    # JAX's GPU performance tips and NVIDIA's JAX-Toolbox images set it: lets the scheduler move
    # collectives (FSDP all-gathers, gradient reduce-scatters) to overlap with compute.
    "xla_gpu_enable_latency_hiding_scheduler": (
        "true", "overlap collectives with compute (multi-GPU meshes)"),
    # Collectives on a high-priority stream so they are not starved by compute kernels
    # (JAX-Toolbox's recommended setting for FSDP/data-parallel training).
    "xla_gpu_enable_highest_priority_async_stream": (
        "true", "run async collectives on a high-priority CUDA stream"),
}


def apply_defaults(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> list[str]:
    """Adds the DEFAULT_FLAGS that XLA_FLAGS does not already set; returns the flags added.

    Has effect only before JAX initializes its backends."""
    if environ.get("JAXLM_XLA_DEFAULTS", "1") == "0":
        return []
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, (value, _) in DEFAULT_FLAGS.items()
             if f"--{name}=" not in current and f"--{name} " not in current + " "]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def apply_before_backends() -> list[str]:
    """`apply_defaults`, unless JAX's backends have started (the flags would only edit the
    environment then, to no effect). Returns the flags added."""
    try:
        from jax._src import xla_bridge  # no public way to ask; absent: leave XLA_FLAGS alone

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        return []
    return [] if started else apply_defaults()


__all__ = ["DEFAULT_FLAGS", "apply_defaults", "apply_before_backends"]
