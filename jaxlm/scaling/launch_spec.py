"""A sweep spec's `launcher:` section: where members run and with what resources.

```yaml
launcher:
  kind: ray                 # local (default) | ray | slurm; `jaxlm sweep --launcher` wins
  max_concurrent: 0         # members running at once; 0: as many as the resources allow
  retries: 2                # new attempts for a member preempted or whose worker died
  resources: {cpus: 1}      # per member: cpus, gpus, tpus (chips)
  tiers:                    # larger members ask for more (the last tier they reach)
    - {min_params: 1.0e8, cpus: 8, tpus: 4}
  address: null             # ray: the cluster to join (`--address`); null: start a local one
  slurm: {partition: gpu, time_min: 120}
```
The schema only; the launchers are in jaxlm.scaling.sweep.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

LAUNCHERS = ("local", "ray", "slurm")
SUBMITIT_EXECUTORS = ("slurm", "local")


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    cpus: float = 1.0  # CPU cores per member
    gpus: float = 0.0  # GPUs per member (its mesh spans them)
    tpus: float = 0.0  # TPU chips per member (Ray resource "TPU"); its mesh spans them
    min_params: float = 0.0  # in `tiers`: members with at least this many params (non-embedding)


@dataclasses.dataclass(frozen=True)
class SlurmSpec:
    executor: str = "slurm"  # slurm, or local: submitit's local executor (a subprocess each)
    partition: Optional[str] = None  # sbatch --partition
    time_min: int = 60  # the time limit of each member's job, minutes
    mem_gb: Optional[float] = None  # memory per job
    folder: Optional[str] = None  # submitit's job files and logs; None: DIR/submitit
    additional: dict[str, Any] = dataclasses.field(default_factory=dict)  # more sbatch keys


@dataclasses.dataclass(frozen=True)
class LauncherSpec:
    kind: str = "local"  # local, ray or slurm
    max_concurrent: int = 0  # 0: as many as the resources allow (local: always 1)
    retries: int = 2  # new attempts for a member preempted or whose worker died
    resources: ResourceSpec = dataclasses.field(default_factory=ResourceSpec)
    tiers: list[ResourceSpec] = dataclasses.field(default_factory=list)
    address: Optional[str] = None  # ray: cluster address; None: a local cluster
    slurm: SlurmSpec = dataclasses.field(default_factory=SlurmSpec)


NESTED = {("LauncherSpec", "resources"): ResourceSpec,
          ("LauncherSpec", "tiers"): ("list", ResourceSpec),
          ("LauncherSpec", "slurm"): SlurmSpec}


def resources_for(spec: LauncherSpec, params: float) -> ResourceSpec:
    """A member's resources: the last tier (by min_params) it reaches, else `resources`."""
    chosen = spec.resources
    for tier in sorted(spec.tiers, key=lambda t: t.min_params):
        if params >= tier.min_params:
            chosen = tier
    return chosen


def validate_launcher(spec: LauncherSpec, bad: Callable[[str, str], Exception]) -> None:
    """Raises bad(key, why) for the first bad value of the section."""
    if spec.kind not in LAUNCHERS:
        raise bad("launcher.kind", f"must be one of {', '.join(LAUNCHERS)}; got '{spec.kind}'")
    if spec.max_concurrent < 0:
        raise bad("launcher.max_concurrent", f"must be >= 0; got {spec.max_concurrent}")
    if spec.retries < 0:
        raise bad("launcher.retries", f"must be >= 0; got {spec.retries}")
    tiers = [("launcher.resources", spec.resources)]
    tiers += [(f"launcher.tiers[{i}]", t) for i, t in enumerate(spec.tiers)]
    for key, r in tiers:
        for name in ("cpus", "gpus", "tpus", "min_params"):
            if getattr(r, name) < 0:
                raise bad(f"{key}.{name}", f"must be >= 0; got {getattr(r, name)}")
    if spec.slurm.executor not in SUBMITIT_EXECUTORS:
        raise bad("launcher.slurm.executor", f"must be one of {', '.join(SUBMITIT_EXECUTORS)}; "
                  f"got '{spec.slurm.executor}'")
    if spec.slurm.time_min <= 0:
        raise bad("launcher.slurm.time_min", f"must be > 0; got {spec.slurm.time_min}")


__all__ = ["LAUNCHERS", "ResourceSpec", "SlurmSpec", "LauncherSpec", "resources_for",
           "validate_launcher"]
