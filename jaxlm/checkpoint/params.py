"""Params-only reads and writes: generation, export and fine-tuning from a run read no optimizer
state; imported weights are written as a bare params tree."""

from __future__ import annotations

import gc
import pathlib
import sys
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from jaxlm.checkpoint.fallback import Unreadable, newest_readable, step_dirs
from jaxlm.checkpoint.fingerprint import fingerprint
from jaxlm.checkpoint.reasons import first_line, quiet_orbax, read_reason
from jaxlm.errors import JaxlmError


def checkpoint_steps(directory: str | pathlib.Path) -> list[int]:
    """The step directories under a run's `checkpoints/` (no Orbax manager started)."""
    return step_dirs(directory)


def _read_tree(path: pathlib.Path, key: Optional[str], shardings: Any) -> Any:
    """The tree saved at `path` (or only its `key` subtree), placed with `shardings`."""
    meta = ocp.PyTreeCheckpointHandler().metadata(path).tree
    meta = meta[key] if key else meta
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, meta)
    target = jax.tree.map(
        lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s), meta, shardings)
    item = {key: target} if key else target
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=bool(key)))
    return restored[key] if key else restored


def _json_item(path: pathlib.Path) -> Any:
    return ocp.JsonCheckpointHandler().restore(path)


def _read_params(step_dir: pathlib.Path, step: int, shardings: Any) -> Any:
    """A checkpoint's params, checked against the fingerprints written with them (the train
    state's `.params...` leaves); Unreadable when they cannot be read or do not match."""
    failed = None
    with quiet_orbax():  # a library read: Orbax's noise off, the process's hooks restored after
        try:
            meta = _json_item(step_dir / "meta")
            params = _read_tree(step_dir / "state", "params", shardings)
            fps, _ = fingerprint(params)
        except Exception as e:  # noqa: BLE001 - missing, truncated or garbled files land here
            failed = read_reason(e)
        if failed is not None:  # Orbax's abandoned coroutines report when collected: now, here
            gc.collect()
    if failed is not None:
        raise Unreadable(failed)
    meta = meta if isinstance(meta, dict) else {}
    saved = meta.get("fingerprint") if isinstance(meta.get("fingerprint"), dict) else {}
    want = {k[len(".params"):]: v for k, v in saved.items() if k.startswith(".params")}
    if meta.get("step") != step or fps != want:
        raise Unreadable("its contents do not match the fingerprint written with it")
    return params


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


def restore_params(directory: str | pathlib.Path, step: Optional[int] = None,
                   shardings: Any = None, log: Callable[[str], None] = _warn
                   ) -> tuple[Any, int]:
    """(params, step) of a run's checkpoint `step` (default: the newest that reads whole, as
    training resumes from: damaged newer ones are reported through `log` and skipped) in
    `directory`, read without the optimizer state; placed with `shardings` (a matching tree)
    or on one device."""
    directory = pathlib.Path(directory).absolute()
    steps = checkpoint_steps(directory)
    if not steps:
        raise JaxlmError(f"no checkpoint in {directory}")
    read = lambda s: _read_params(directory / str(s), s, shardings)  # noqa: E731
    if step is None:
        step, params, _ = newest_readable(directory, steps, read, log)
        return params, step
    if step not in steps:
        raise JaxlmError(f"no checkpoint for step {step} in {directory} (have {steps})")
    try:
        return read(step), step
    except Unreadable as e:
        raise JaxlmError(f"cannot restore checkpoint {directory / str(step)}: {e}") from None


def checkpoint_config(directory: str | pathlib.Path, log: Callable[[str], None] = _warn
                      ) -> Optional[tuple[int, dict]]:
    """(step, the run config saved with it) of the newest checkpoint in `directory` whose
    config reads; None when no checkpoint holds one."""
    directory = pathlib.Path(directory).absolute()

    def read(step: int) -> dict:
        path = directory / str(step) / "config"
        if not path.is_dir():
            raise Unreadable("it holds no config")
        try:
            value = _json_item(path)
        except Exception as e:  # noqa: BLE001
            raise Unreadable(read_reason(e)) from None
        if not isinstance(value, dict):
            raise Unreadable("its config is not a mapping")
        return value

    try:
        found = newest_readable(directory, checkpoint_steps(directory), read, log)
    except JaxlmError:
        return None
    return None if found is None else (found[0], found[1])


def save_params(directory: str | pathlib.Path, params: Any) -> None:
    """Writes a bare params tree (e.g. imported weights) as an Orbax checkpoint at `directory`."""
    ocp.PyTreeCheckpointer().save(pathlib.Path(directory).absolute(), params)


def load_params(directory: str | pathlib.Path, shardings: Any = None) -> Any:
    """Reads what `save_params` wrote."""
    path = pathlib.Path(directory).absolute()
    try:
        return _read_tree(path, None, shardings)
    except (ValueError, KeyError, FileNotFoundError, TypeError, AttributeError) as e:
        raise JaxlmError(f"cannot read the parameters in {path}: {first_line(e)}") from None
