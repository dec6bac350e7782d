"""Params-only reads and writes: generation, export and fine-tuning from a run read no optimizer
state; imported weights are written as a bare params tree."""

from __future__ import annotations

import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from jaxlm.checkpoint.reasons import first_line
from jaxlm.errors import JaxlmError


def checkpoint_steps(directory: str | pathlib.Path) -> list[int]:
    """The committed step directories under a run's `checkpoints/` (no Orbax manager started)."""
    d = pathlib.Path(directory)
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _restore_params_tree(path: pathlib.Path, key: Optional[str], shardings: Any) -> Any:
    """The tree saved at `path` (or only its `key` subtree), placed with `shardings`."""
    ckptr = ocp.PyTreeCheckpointer()
    try:
        meta = ocp.PyTreeCheckpointHandler().metadata(path).tree
        meta = meta[key] if key else meta
        if shardings is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            shardings = jax.tree.map(lambda _: device, meta)
        target = jax.tree.map(
            lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s), meta, shardings)
        item = {key: target} if key else target
        restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=bool(key)))
    except (ValueError, KeyError, FileNotFoundError, TypeError, AttributeError) as e:
        raise JaxlmError(f"cannot read the parameters in {path}: {first_line(e)}") from None
    return restored[key] if key else restored


def restore_params(directory: str | pathlib.Path, step: Optional[int] = None,
                   shardings: Any = None) -> tuple[Any, int]:
    """(params, step) of a run's checkpoint `step` (default: the newest) in `directory`, read
    without the optimizer state; placed with `shardings` (a matching tree) or on one device."""
    steps = checkpoint_steps(directory)
    if not steps:
        raise JaxlmError(f"no checkpoint in {directory}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise JaxlmError(f"no checkpoint for step {step} in {directory} (have {steps})")
    path = pathlib.Path(directory).absolute() / str(step) / "state"
    return _restore_params_tree(path, "params", shardings), step


def save_params(directory: str | pathlib.Path, params: Any) -> None:
    """Writes a bare params tree (e.g. imported weights) as an Orbax checkpoint at `directory`."""
    ocp.PyTreeCheckpointer().save(pathlib.Path(directory).absolute(), params)


def load_params(directory: str | pathlib.Path, shardings: Any = None) -> Any:
    """Reads what `save_params` wrote."""
    path = pathlib.Path(directory).absolute()
    return _restore_params_tree(path, None, shardings)
