"""The `ray` launcher: each sweep member a Ray task asking for its resources (CPUs, GPUs,
TPU chips), on the cluster at `address` or on a local one started here.

Ray's own task retries are off (max_retries=0): the driver counts attempts, so a member whose
worker died is started again (resuming from its checkpoint) up to `launcher.retries` times,
and a member that failed in training is not. Ray is imported only here.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Optional

import ray

from jaxlm.scaling.launch_spec import LauncherSpec
from jaxlm.scaling.sweep.launchers import Launcher, Outcome
from jaxlm.scaling.sweep.member import Task, member_task, one_line

_remote_member = ray.remote(member_task)


class RayLauncher(Launcher):
    name = "ray"

    def __init__(self, spec: LauncherSpec, address: Optional[str] = None, verbose: bool = False):
        self.spec = spec
        self._started = False
        if not ray.is_initialized():  # a Python caller may have connected already
            kwargs: dict[str, Any] = {"address": address, "log_to_driver": verbose,
                                      "logging_level": logging.INFO if verbose
                                      else logging.ERROR}
            if not address:  # a local cluster: this machine's cores, no dashboard
                kwargs.update(num_cpus=os.cpu_count(), include_dashboard=False)
            with warnings.catch_warnings():  # Ray forks then execs its daemons: harmless
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
                ray.init(**kwargs)
            self._started = True

    def slots(self) -> int:
        if self.spec.max_concurrent:
            return self.spec.max_concurrent
        res, r = ray.cluster_resources(), self.spec.resources
        fits = [res.get(k, 0.0) // need for k, need in (("CPU", r.cpus), ("GPU", r.gpus),
                                                         ("TPU", r.tpus)) if need > 0]
        return max(1, int(min(fits))) if fits else max(1, int(res.get("CPU", 1)))

    def submit(self, task: Task) -> Any:
        r = task.resources
        return _remote_member.options(
            num_cpus=r.cpus, num_gpus=r.gpus, resources={"TPU": r.tpus} if r.tpus else None,
            max_retries=0, retry_exceptions=False, name=f"jaxlm-sweep:{task.member.name}",
        ).remote(task)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Outcome]]:
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, Outcome(row=ray.get(ref))))
            except ray.exceptions.RayTaskError as e:  # raised inside the task, not a dead worker
                out.append((ref, Outcome(error=one_line(getattr(e, "cause", None) or e))))
            except ray.exceptions.RayError as e:  # the worker or its node died
                out.append((ref, Outcome(lost=one_line(e))))
        return out

    def cancel(self, handles: list) -> None:
        for ref in handles:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            ray.shutdown()


__all__ = ["RayLauncher"]
