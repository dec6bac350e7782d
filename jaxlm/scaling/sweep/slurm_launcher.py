"""The `slurm` launcher: each sweep member a SLURM job through submitit (partition, time limit,
CPUs, GPUs and memory from the spec's `launcher.slurm` and `launcher.resources`/`tiers`).
`launcher.slurm.executor: local` runs each job as a local subprocess instead (submitit's local
executor: a way to try a spec, and what the tests use). submitit is imported only here.

The driver stays in charge of order, dependencies and retries: a job that SLURM preempted,
timed out or killed (submitit's UncompletedJobError) is submitted again and resumes from its
checkpoint, up to `launcher.retries` times.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from jaxlm.errors import JaxlmError
from jaxlm.scaling.launch_spec import LauncherSpec
from jaxlm.scaling.sweep.launchers import Launcher, Outcome
from jaxlm.scaling.sweep.member import Task, member_task, one_line

POLL_SEC = 0.5


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, spec: LauncherSpec, workdir: str):
        self.spec = spec
        s = spec.slurm
        folder = s.folder or str(pathlib.Path(workdir) / "submitit")
        try:
            self.executor = submitit.AutoExecutor(folder=folder, cluster=s.executor)
        except RuntimeError as e:  # no SLURM here (submitit looks for srun)
            raise JaxlmError(f"--launcher slurm: {e} (launcher.slurm.executor: local runs "
                             "each member as a local process instead)") from None
        params: dict[str, Any] = {"timeout_min": s.time_min}
        if s.mem_gb is not None:
            params["mem_gb"] = s.mem_gb
        if s.executor == "slurm":
            if s.partition:
                params["slurm_partition"] = s.partition
            if s.additional:
                params["slurm_additional_parameters"] = dict(s.additional)
        self.executor.update_parameters(**params)

    def slots(self) -> int:
        if self.spec.max_concurrent:
            return self.spec.max_concurrent
        if self.spec.slurm.executor == "slurm":
            return 1 << 30  # SLURM queues what it cannot start yet
        # the local executor starts every job at once: as many as this machine's cores fit
        return max(1, int((os.cpu_count() or 1) // max(1.0, self.spec.resources.cpus)))

    def submit(self, task: Task) -> Any:
        r = task.resources
        self.executor.update_parameters(name=f"jaxlm-{task.member.name}",
                                        cpus_per_task=max(1, int(round(r.cpus))),
                                        gpus_per_node=int(r.gpus))
        return self.executor.submit(member_task, task)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Outcome]]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [job for job in handles if job.done()]
            if ended or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SEC)
        out = []
        for job in ended:
            try:
                out.append((job, Outcome(row=job.result())))
            except UncompletedJobError as e:  # preempted, timed out or killed
                out.append((job, Outcome(lost=one_line(e))))
            except FailedJobError as e:  # raised inside the job
                out.append((job, Outcome(error=one_line(e))))
        return out

    def cancel(self, handles: list) -> None:
        for job in handles:
            job.cancel(check=False)


__all__ = ["SlurmLauncher"]
