"""Launchers: where sweep members run. The driver (jaxlm.scaling.sweep.schedule) decides what
runs when; a launcher only starts a member (`submit`), reports the ones that ended (`wait`) and
says how many may run at once (`slots`).

- `local`: in this process, one at a time (the default; a stop signal to this process stops
  the sweep after the member checkpoints, exit 75);
- `ray` (jaxlm.scaling.sweep.ray_launcher): each member a Ray task with its resources;
- `slurm` (jaxlm.scaling.sweep.slurm_launcher): each member a submitit job.

Ray and submitit are imported only by their launchers (`pip install jaxlm[cluster]`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from jaxlm.errors import JaxlmError
from jaxlm.scaling.launch_spec import LauncherSpec
from jaxlm.scaling.sweep.member import Task, run_member


@dataclasses.dataclass
class Outcome:
    """How a member's attempt ended: its row (status ok, failed or preempted); or `lost`: why
    its worker died before it reported (killed, out of memory, a node gone; retried); or
    `error`: why the worker could not run it at all (not retried)."""

    row: Optional[dict[str, Any]] = None
    lost: Optional[str] = None
    error: Optional[str] = None


class Launcher:
    name = "base"
    in_process = False  # a preempted member means this process was signalled: stop the sweep

    def slots(self) -> int:
        """How many members may run at once."""
        raise NotImplementedError

    def submit(self, task: Task) -> Any:
        """Starts `task`; returns a handle for `wait`."""
        raise NotImplementedError

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Outcome]]:
        """The handles that ended (at least one unless `timeout` seconds passed first)."""
        raise NotImplementedError

    def cancel(self, handles: list) -> None:
        """Stops the running members (the driver is stopping)."""

    def close(self) -> None:
        pass


class LocalLauncher(Launcher):
    """Members run one at a time in this process, when `wait` is called."""

    name = "local"
    in_process = True

    def __init__(self, train_fn: Optional[Callable] = None):
        self.train_fn = train_fn
        self._pending: list[Task] = []

    def slots(self) -> int:
        return 1

    def submit(self, task: Task) -> Task:
        self._pending.append(task)
        return task

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Outcome]]:
        task = self._pending.pop(0)
        return [(task, Outcome(row=run_member(task, self.train_fn)))]


def _missing(module: str, launcher: str) -> JaxlmError:
    return JaxlmError(f"--launcher {launcher} needs the {module} package: "
                      f"pip install 'jaxlm[cluster]' (or pip install {module})")


def make_launcher(spec: LauncherSpec, workdir: str, *, kind: Optional[str] = None,
                  address: Optional[str] = None, verbose: bool = False,
                  train_fn: Optional[Callable] = None) -> Launcher:
    """The launcher `kind` (default: the spec's `launcher.kind`) with the spec's settings."""
    kind = kind or spec.kind
    if kind == "local":
        return LocalLauncher(train_fn)
    if train_fn is not None:
        raise ValueError("train_fn runs in this process: only the local launcher takes it")
    if kind == "ray":
        try:
            from jaxlm.scaling.sweep.ray_launcher import RayLauncher
        except ModuleNotFoundError as e:
            raise _missing("ray", kind) if e.name == "ray" else e
        return RayLauncher(spec, address or spec.address, verbose=verbose)
    if kind == "slurm":
        try:
            from jaxlm.scaling.sweep.slurm_launcher import SlurmLauncher
        except ModuleNotFoundError as e:
            raise _missing("submitit", kind) if e.name == "submitit" else e
        return SlurmLauncher(spec, workdir)
    raise JaxlmError(f"unknown launcher '{kind}'; choose from local, ray, slurm")


__all__ = ["Outcome", "Launcher", "LocalLauncher", "make_launcher"]
