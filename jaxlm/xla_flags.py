"""XLA flags jaxlm sets by default (before JAX starts its backends), each with the reason.

`DEFAULT_FLAGS` are GPU flags: XLA ignores them on CPU and TPU. For training a Transformer on a
CPU-only machine, jaxlm also splits the CPU into one JAX device per core (`cpu_device_flags`),
each running its ops on one thread, and trains data-parallel over them: XLA's CPU runtime spreads
a small op over its threads poorly (the quickstart step kept ~1.2 of 2 cores busy), while one
device per core keeps every core on its own half of the batch (1.13x the tokens/s), and XLA's
CPU client gets one thread per device (PJRT_NPROC). An LSTM's sequential steps are the opposite
case (0.69-0.73x on the split: benchmarks/RESULTS.md), so LSTMs, and sweep members (one process
trains every family), keep JAX's single CPU device. `JAXLM_CPU_DEVICES` sets the count (`auto`,
the default: the cores this process may use, at most 8; `1`: JAX's single CPU device). A flag
already in XLA_FLAGS is left as the user set it, and JAXLM_XLA_DEFAULTS=0 turns all of them off.
They are set where a jaxlm run starts, never on import: by the command line (`jaxlm ...`,
`python train.py`) before anything starts JAX, and by `jaxlm.train` when JAX's backends have not
started yet. Every flag here is checked to parse with the installed jaxlib by
tests/unit/test_xla_flags.py (XLA aborts the process on an unknown flag).
"""

from __future__ import annotations

import os
import sys

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


CPU_DEVICES_ENV = "JAXLM_CPU_DEVICES"  # auto (default) | N | 1 (off)
# set to the device count when jaxlm split the CPU (inherited by the processes a run starts), so
# the mesh knows the devices are its own choice and may use fewer of them (`auto_cpu_devices`)
CPU_DEVICES_ADDED_ENV = "JAXLM_CPU_DEVICES_ADDED"
MAX_AUTO_CPU_DEVICES = 8
_DEVICE_COUNT = "xla_force_host_platform_device_count"
_EIGEN_THREADS = "xla_cpu_multi_thread_eigen"
_ACCELERATOR_MODULES = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin")


def _has(current: str, name: str) -> bool:
    return f"--{name}=" in current or f"--{name} " in current + " "


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_only(environ: "os._Environ[str] | dict[str, str]") -> bool:
    """Whether JAX will run on the CPU: JAX_PLATFORMS says cpu only, or no accelerator plugin
    (CUDA, ROCm, TPU) is installed. Checked without importing JAX or the plugins."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms == ["cpu"]
    import importlib.metadata
    import importlib.util

    import pkgutil

    if any(importlib.util.find_spec(m) is not None for m in _ACCELERATOR_MODULES):
        return False
    namespace = importlib.util.find_spec("jax_plugins")  # how JAX discovers PJRT plugins
    if namespace is not None and any(pkgutil.iter_modules(namespace.submodule_search_locations)):
        return False
    return not list(importlib.metadata.entry_points(group="jax_plugins"))


def cpu_device_count(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> int:
    """The CPU devices `JAXLM_CPU_DEVICES` asks for (`auto`: the usable cores, at most
    MAX_AUTO_CPU_DEVICES). Raises JaxlmError naming the variable for a bad value."""
    want = environ.get(CPU_DEVICES_ENV, "auto").strip().lower()
    if want == "auto":
        return min(usable_cores(), MAX_AUTO_CPU_DEVICES)
    if want.isdigit() and int(want) >= 1:
        return int(want)
    from jaxlm.errors import JaxlmError

    raise JaxlmError(f"{CPU_DEVICES_ENV}={environ.get(CPU_DEVICES_ENV)!r} is not 'auto' or a "
                     "device count >= 1")


def cpu_device_flags(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> list[str]:
    """The flags that split a CPU-only machine into `cpu_device_count` single-threaded devices
    (none when the count is 1, XLA_FLAGS already sets a device count, or JAX may find an
    accelerator). Eigen's intra-op threads stay on when there are fewer devices than cores."""
    n = cpu_device_count(environ)
    current = environ.get("XLA_FLAGS", "")
    if n <= 1 or _has(current, _DEVICE_COUNT) or not cpu_only(environ):
        return []
    flags = [f"--{_DEVICE_COUNT}={n}"]
    if n >= usable_cores() and not _has(current, _EIGEN_THREADS):
        flags.append(f"--{_EIGEN_THREADS}=false")
    return flags


def single_threaded_cpu(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> bool:
    """Whether each CPU device runs its ops on one thread (as the CPU split sets XLA_FLAGS)."""
    return f"--{_EIGEN_THREADS}=false" in environ.get("XLA_FLAGS", "")


def auto_cpu_devices(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> int:
    """The CPU device count jaxlm chose for this process (0 when it chose none)."""
    value = environ.get(CPU_DEVICES_ADDED_ENV, "")
    return int(value) if value.isdigit() else 0


def keep_one_cpu_device(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> None:
    """No CPU split for this process unless the user asked for one (`JAXLM_CPU_DEVICES`): for
    processes that train members of several families (sweeps, the planner's calibration)."""
    environ.setdefault(CPU_DEVICES_ENV, "1")


def apply_defaults(environ: "os._Environ[str] | dict[str, str]" = os.environ, *,
                   training: bool = False) -> list[str]:
    """Adds the DEFAULT_FLAGS that XLA_FLAGS does not already set and, for `training` (a run
    that trains a Transformer), the CPU device split; returns the flags added.

    Has effect only before JAX initializes its backends."""
    if environ.get("JAXLM_XLA_DEFAULTS", "1") == "0":
        return []
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, (value, _) in DEFAULT_FLAGS.items()
             if not _has(current, name)]
    cpu = cpu_device_flags(environ) if training else []
    if cpu:
        n = cpu[0].split("=")[1]
        environ[CPU_DEVICES_ADDED_ENV] = n
        # PJRT_NPROC sizes both of XLA's CPU pools: the client's (one thread per executing
        # device; XLA launches one collective program at a time, so as many threads as devices
        # let every device reach the all-reduce) and the one the ops run on. With one
        # single-threaded device per core, as many threads as devices measured fastest: 2 on 2
        # cores stepped 0.90x the time of 4 at 12 x 64 tokens and 0.93x at 16 x 256, steadier
        # and with less CPU (3 was no better than 4). Spare threads only hop the devices' ops
        # between them. With Eigen's threads on (fewer devices than cores) the pool keeps room.
        single = f"--{_EIGEN_THREADS}=false" in " ".join([current, *cpu])
        if "PJRT_NPROC" not in environ and "NPROC" not in environ:
            environ["PJRT_NPROC"] = str(int(n) if single else 2 * int(n))
    added += cpu
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def backends_started() -> bool:
    """Whether JAX's backends have started (True when JAX cannot say: then leave them be).
    Does not import JAX: before `import jax` nothing has started."""
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    if xla_bridge is None:
        return False
    try:
        return bool(xla_bridge.backends_are_initialized())
    except AttributeError:  # no public way to ask; gone: cannot tell
        return True


def apply_before_backends(*, training: bool = False) -> list[str]:
    """`apply_defaults`, unless JAX's backends have started (the flags would only edit the
    environment then, to no effect). Returns the flags added."""
    return [] if backends_started() else apply_defaults(training=training)


__all__ = ["DEFAULT_FLAGS", "CPU_DEVICES_ENV", "CPU_DEVICES_ADDED_ENV", "MAX_AUTO_CPU_DEVICES",
           "apply_defaults", "apply_before_backends", "backends_started", "cpu_device_count",
           "cpu_device_flags", "keep_one_cpu_device", "single_threaded_cpu",
           "auto_cpu_devices", "cpu_only", "usable_cores"]
