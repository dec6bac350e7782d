"""One sweep member on whichever worker runs it: train in DIR/runs/NAME, write its record.

`member_task(task)` is what every launcher runs (in this process, a Ray worker or a SLURM job):
it trains the member through jaxlm.train.loop.train (which resumes from the member's
checkpoint), writes DIR/runs/NAME.result.json (jaxlm.scaling.results) and returns the row.
A training error is the row's status `failed` (a user error is not worth retrying); a stop
signal after checkpointing is `preempted` (the driver retries it, which resumes).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Optional

from jaxlm import flops, xla_flags
from jaxlm.errors import JaxlmError
from jaxlm.scaling.launch_spec import ResourceSpec
from jaxlm.scaling.plan import Member, member_config
from jaxlm.scaling.results import RUNS_DIR, conditions, fmt_loss, member_row, write_record
from jaxlm.scaling.spec import SweepSpec


@dataclasses.dataclass(frozen=True, eq=False)  # a launcher's handle: hashed by identity
class Task:
    """What a worker needs to run one member (picklable: Ray and submitit send it)."""

    spec: SweepSpec
    member: Member
    workdir: str  # the sweep directory
    attempt: int = 1
    quiet: bool = True
    resources: ResourceSpec = dataclasses.field(default_factory=ResourceSpec)
    compilation_cache: Optional[str] = None  # the driver's JAX compilation cache folder


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(e, JaxlmError) else f"{type(e).__name__}: {msg}"


def _final_train_loss(run_dir: pathlib.Path) -> Optional[float]:
    from jaxlm.train.metrics import load_metrics

    losses = [r["loss"] for r in load_metrics(run_dir) if "event" not in r and "loss" in r]
    return losses[-1] if losses else None


def run_member(task: Task, train_fn: Optional[Callable] = None) -> dict[str, Any]:
    """Trains `task.member` (or resumes it); writes its record; returns its row."""
    xla_flags.keep_one_cpu_device()  # a sweep process trains every family: no CPU split
    import jax

    if train_fn is None:
        from jaxlm.train.loop import train as train_fn
    m = task.member
    run_dir = pathlib.Path(task.workdir) / RUNS_DIR / m.name
    t0, cond = time.time(), {}
    try:
        cfg = member_config(task.spec, m, task.workdir)
        cond = conditions(cfg, task.spec)
        result = train_fn(cfg, run_dir, quiet=task.quiet)
    except Exception as e:  # noqa: BLE001 - recorded; the sweep goes on
        row = member_row(m, "failed", error=one_line(e), wall_time=f"{time.time() - t0:.1f}")
    else:
        extra: dict[str, Any] = {"wall_time": f"{result.wall_time:.1f}", **cond}
        if result.params is not None:
            total, n = flops.param_counts(result.params)
            extra.update(params=n, params_total=total)
        if result.preempted:
            row = member_row(m, "preempted", **extra,
                             error=f"stopped at step {result.final_step}")
        else:
            e = result.eval
            row = member_row(m, "ok", **extra, train_loss=fmt_loss(_final_train_loss(run_dir)),
                             loss=fmt_loss(e.get("eval_loss")),
                             eval_bpb=fmt_loss(e.get("eval_bpb")))
    if jax.process_index() == 0:  # multi-host members: one writer
        write_record(task.workdir, row, attempts=task.attempt)
    return row


def member_task(task: Task) -> dict[str, Any]:
    """The entry point on a worker process (Ray task, SLURM job): the process set up as
    `jaxlm sweep` sets up its own (Orbax quiet, the same compilation cache), then the member
    (training applies jaxlm's XLA flags itself, before JAX's backends start)."""
    from jaxlm.checkpoint.reasons import quiet_orbax_process

    quiet_orbax_process()
    if task.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax

        if not jax.config.jax_compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", task.compilation_cache)
    return run_member(task)


__all__ = ["Task", "run_member", "member_task", "one_line"]
