"""Will the run fit in memory? Asked before anything big is allocated, so that a model or a batch
too large for the devices is refused in seconds with the numbers, not minutes later with an
out-of-memory traceback (or a machine swapping for minutes).

Two checks, both per device:

1. `check_state`: the train state (parameters + optimizer state) from its abstract shapes and
   shardings (jax.eval_shape: nothing allocated). Exact, and free.
2. `check_step`: XLA's memory analysis of the compiled train step (arguments + outputs - what
   the donated state reuses + temporaries: activations, gradients) plus the prefetched batches.
   Compiling is what the first step does anyway: the step compiled here is the one the loop
   runs (JAX's compilation cache holds it).

What a device has: `memory_stats()['bytes_limit']` on GPU and TPU (what XLA's allocator may
use); CPUs report none, so a CPU device gets the host's physical memory shared by the CPU
devices of the process. Unknown: no check. Over it: JaxlmError; within `WARN_FRACTION` of it:
a warning. JAXLM_MEMORY_CHECK=0 skips both (a wrong estimate must not block a run).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxlm.errors import JaxlmError

WARN_FRACTION = 0.9  # warn when the estimate is above this share of what a device has
SKIP_ENV = "JAXLM_MEMORY_CHECK"  # "0": no memory checks


def gib(n: float) -> str:
    """Bytes as '1.5 GiB' ('2.1 TiB', '12 MiB' where that reads better)."""
    if n >= 2**40:
        return f"{n / 2**40:.3g} TiB"
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.3g} MiB"


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max",  # cgroup v2
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v1


def _cgroup_limit(paths: tuple[str, ...] = CGROUP_LIMITS) -> Optional[int]:
    """The memory limit of this process's container (cgroup), None when there is none."""
    for path in paths:
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def host_memory() -> Optional[int]:
    """The memory this process may use in bytes: the host's physical memory, or its
    container's limit when lower (a Docker/Kubernetes/SLURM job; None where the OS does not
    say)."""
    try:
        total: Optional[int] = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        total = None
    limit = _cgroup_limit()
    return min(x for x in (total, limit) if x is not None) if (total or limit) else None


def device_budget(devices: Optional[list] = None) -> Optional[tuple[int, str]]:
    """(bytes one device may use, what that is), or None when unknown."""
    devices = devices or jax.local_devices()
    device = devices[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"each {device.device_kind}'s memory"
    if device.platform == "cpu":
        total = host_memory()
        if total:
            n = sum(d.platform == "cpu" for d in devices)
            if n == 1:
                return total, "the host's RAM"
            return total // n, f"a share of the host's {gib(total)} of RAM over {n} CPU devices"
    return None


def state_bytes(abstract: Any, shardings: Any) -> int:
    """Bytes of the train state on one device: each leaf's shard (a replicated leaf is whole)."""
    total = 0
    for leaf, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        shape = s.shard_shape(leaf.shape) if hasattr(s, "shard_shape") else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _enabled() -> bool:
    return os.environ.get(SKIP_ENV, "1") != "0"


def _judge(need: int, what: str, advice: str, budget: Optional[tuple[int, str]],
           warn: Callable[[str], None]) -> None:
    if budget is None:
        return
    have, where = budget
    if need > have:
        raise JaxlmError(f"{what} needs {gib(need)} per device, more than {where} "
                         f"({gib(have)}); {advice}")
    if need > WARN_FRACTION * have:
        warn(f"jaxlm: warning: {what} needs {gib(need)} per device, {100 * need / have:.0f}% of "
             f"{where} ({gib(have)}): it may not fit; {advice}")


def check_state(abstract: Any, shardings: Any, n_params: int, platform: str,
                warn: Callable[[str], None] = lambda msg: None,
                budget: Optional[tuple[int, str]] = None) -> int:
    """Refuses a train state (params + optimizer state) larger than a device's memory; returns
    its bytes per device. `budget` (default `device_budget()`)."""
    need = state_bytes(abstract, shardings)
    if not _enabled():
        return need
    advice = ("use a smaller model (model.d_model, model.n_layers)"
              + ("" if platform == "cpu" else ", or shard it over more devices (mesh.fsdp)"))
    _judge(need, f"the train state ({n_params:,} parameters with their optimizer state)",
           advice, budget or device_budget(), warn)
    return need


def compiled_bytes(compiled: Any) -> Optional[int]:
    """Peak bytes one device needs to run `compiled` (a jax Compiled), from XLA's memory
    analysis: arguments + outputs - aliased (donated) + temporaries + code. None if unknown."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if m is None:
        return None
    m = m[0] if isinstance(m, (list, tuple)) else m
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes + m.generated_code_size_in_bytes)


def check_step(train_step: Any, abstract_state: Any, state_shardings: Any,
               batch: dict[str, jax.ShapeDtypeStruct], prefetch: int,
               warn: Callable[[str], None] = lambda msg: None,
               budget: Optional[tuple[int, str]] = None) -> Optional[int]:
    """Compiles `train_step` for the run's shapes and refuses it when what XLA will allocate for
    one step, plus `prefetch` batches kept ahead, is more than a device has. Returns that
    estimate (None when XLA gives none, or the check is off)."""
    if not _enabled():
        return None
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract_state, state_shardings)
    need = compiled_bytes(train_step.lower(state, batch).compile())
    if need is None:
        return None
    need += prefetch * state_bytes(batch, {k: v.sharding for k, v in batch.items()})
    _judge(need, "one train step (state, gradients, activations and prefetched batches)",
           "reduce train.batch_size or data.seq_len, or split the batch into microbatches "
           "(train.grad_accum), or recompute activations (model.remat=full)",
           budget or device_budget(), warn)
    return need


__all__ = ["check_state", "check_step", "device_budget", "state_bytes", "compiled_bytes",
           "host_memory", "gib", "WARN_FRACTION", "SKIP_ENV"]
