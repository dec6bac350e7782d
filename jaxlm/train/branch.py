"""Cooldown branches (`train.branch_from=RUN_DIR@STEP`): a fresh run that starts from another
run's checkpoint at STEP, its train state and its data-iterator position, so that the branch
sees exactly the batches the trunk would have seen next. With a constant-lr trunk and a wsd
branch whose decay starts at or after STEP, the branch is the run trained with the branch's
schedule from the start (bitwise on CPU): one trunk per size gives losses at many D."""

from __future__ import annotations

import pathlib
from typing import Any, Optional

from jaxlm.checkpoint import Checkpointer, checkpoint_steps
from jaxlm.config import RunConfig
from jaxlm.errors import JaxlmError
from jaxlm.train.optim import wsd_decay_start

# what the branch must share with its trunk for the checkpoint to mean the same run
_SAME = ("model.", "data.", "optim.name", "optim.lr", "optim.warmup_steps",
         "optim.weight_decay", "optim.b1", "optim.b2", "optim.eps", "optim.momentum",
         "optim.grad_clip", "train.batch_size", "train.grad_accum", "train.seed")


def parse(branch_from: str) -> tuple[pathlib.Path, int]:
    """RUN_DIR@STEP -> (run directory, step); validate() has checked the form."""
    run, _, step = branch_from.rpartition("@")
    return pathlib.Path(run).expanduser(), int(step)


def constant_until(cfg: RunConfig) -> Optional[int]:
    """The last step at which `cfg`'s lr has been constant since warmup (its schedule's decay
    start), or None when its schedule decays from the end of the warmup (cosine, linear)."""
    o = cfg.optim
    if o.schedule == "constant":
        return cfg.train.steps
    if o.schedule == "wsd":
        return wsd_decay_start(o, cfg.train.steps)
    return None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def check(cfg: RunConfig, trunk: RunConfig, trunk_dir: pathlib.Path, step: int) -> None:
    """Refuses a branch that would not continue its trunk: a different model, data or
    optimizer, a trunk whose lr was not constant up to `step`, a branch schedule that would
    have decayed before `step`."""
    import dataclasses

    key = f"train.branch_from={cfg.train.branch_from}"
    new, old = _flat(dataclasses.asdict(cfg)), _flat(dataclasses.asdict(trunk))
    diff = [k for k in sorted(new) if k.startswith(_SAME) and new[k] != old.get(k)]
    if diff:
        what = ", ".join(f"{k}={new[k]} (trunk: {old.get(k)})" for k in diff)
        raise JaxlmError(f"{key}: this run differs from its trunk {trunk_dir} in {what}; a "
                         f"branch continues the trunk's run: set them as the trunk has them")
    until = constant_until(trunk)
    if until is None or until < step:
        raise JaxlmError(f"{key}: the trunk {trunk_dir} (optim.schedule={trunk.optim.schedule}) "
                         f"does not hold a constant lr up to step {step}; branch from a "
                         f"constant-lr (or wsd, before its decay) trunk")
    mine = constant_until(cfg)
    if mine is None or mine < step:
        raise JaxlmError(f"{key}: this run's optim.schedule={cfg.optim.schedule} "
                         f"{'decays from step ' + str(mine) if mine is not None else 'decays'}"
                         f", before the branch point {step}; use optim.schedule=wsd with "
                         f"optim.decay_fraction <= {(cfg.train.steps - step) / cfg.train.steps:.4g}")


def check_trunk(cfg: RunConfig) -> None:
    """Before anything is built: the trunk of `cfg.train.branch_from` exists, continues into
    this run (`check`) and holds a checkpoint at the branch step. JaxlmError names the fault."""
    from jaxlm import rundir

    trunk_dir, step = parse(cfg.train.branch_from)
    key = f"train.branch_from={cfg.train.branch_from}"
    steps = checkpoint_steps(trunk_dir / rundir.CHECKPOINTS)
    if step not in steps:
        raise JaxlmError(f"{key}: {trunk_dir} has no checkpoint at step {step} (it has "
                         f"{', '.join(map(str, sorted(steps))) or 'none'}); the trunk's "
                         f"train.checkpoint_every and keep_checkpoints must keep it")
    check(cfg, rundir.read_config(trunk_dir), trunk_dir, step)


def restore(cfg: RunConfig, abstract: Any, shardings: Any, batches: Any) -> tuple[Any, int]:
    """(the trunk's train state at the branch step, that step); `batches` continues from the
    trunk's data position there. `check_trunk` has passed."""
    from jaxlm import rundir

    trunk_dir, step = parse(cfg.train.branch_from)
    ckpt = Checkpointer(trunk_dir / rundir.CHECKPOINTS,
                        keep=max(len(checkpoint_steps(trunk_dir / rundir.CHECKPOINTS)), 1))
    try:
        return ckpt.restore(step, abstract, shardings, batches), step
    finally:
        ckpt.close()


__all__ = ["parse", "check", "check_trunk", "restore", "constant_until"]
