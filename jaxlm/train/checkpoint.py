"""Orbax checkpoints (the only module that touches Orbax).

A checkpoint is a step directory `checkpoints/<step>/`, written under a temporary name and
renamed when whole (Orbax's atomic commit: a process killed at any moment leaves only whole
checkpoints), holding

  state    params, optimizer state, step, RNG: restored onto the abstract sharded state, so any
           mesh the parameters fit works, not only the one that saved them
  data     the Grain train-iterator state (JSON)
  meta     a fingerprint of every state leaf, the skipped-step count (JSON)
  config   the resolved run config (JSON)
  metrics  the eval loss, for checkpoints made at an eval step (ranks the best checkpoint)

Saves are asynchronous: `save` returns once the state is copied off the devices (the train
step may then donate its buffers) and Orbax writes in the background. Retention: the newest
`keep` checkpoints plus the one with the lowest eval loss.

Restoring walks from the newest checkpoint down. Each is checked against its fingerprint
(Orbax's format has no checksum over array data: garbage bytes in a data file restore as wrong
numbers without an error). A damaged checkpoint is reported with its path and, once an older
one restored, moved aside to `checkpoints.corrupt/` (never deleted, never overwritten); when
none restores, a JaxlmError says so and nothing is changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import sys
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from jaxlm.errors import JaxlmError, NonFiniteError

CORRUPT_DIR = "checkpoints.corrupt"  # beside the checkpoints directory


def grain_state_from_json(state: Any) -> Any:
    """Undoes JSON's tuple -> list: grain compares `remainder_slices` entries with tuples
    (`sl != (-1, -1)`), so a list there silently resumes the data at the wrong position."""
    if isinstance(state, dict):
        return {
            k: ({kk: tuple(vv) if isinstance(vv, list) else vv for kk, vv in v.items()}
                if k == "remainder_slices" and isinstance(v, dict) else grain_state_from_json(v))
            for k, v in state.items()
        }
    if isinstance(state, list):
        return [grain_state_from_json(v) for v in state]
    return state


# ---------------------------------------------------------------------------------------------
# fingerprints: one uint32 per leaf, computed where the leaf lives (no gather to the host)


def _as_uint32(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)  # 8 bytes: (..., 2)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """A position-weighted hash of the leaf's bits: any change of one element changes it.

    Each element maps injectively (odd multipliers and xorshifts are bijections of uint32) and
    the wrapping sum does not depend on how the leaf is sharded.
    """
    u = _as_uint32(x)
    idx = jnp.zeros(u.shape, jnp.uint32)
    for d, n in enumerate(u.shape):
        idx = idx * jnp.uint32(n) + jax.lax.broadcasted_iota(jnp.uint32, u.shape, d)
    h = u * ((idx * jnp.uint32(2) + jnp.uint32(1)) * jnp.uint32(0x9E3779B1))
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    return jnp.sum(h, dtype=jnp.uint32)


def _fingerprint_and_finite(leaves: list) -> tuple[jax.Array, jax.Array]:
    fps = jnp.stack([_leaf_fingerprint(x) for x in leaves]) if leaves else jnp.zeros(0, jnp.uint32)
    finite = jnp.array(True)
    for x in leaves:
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite &= jnp.all(jnp.isfinite(x))
    return fps, finite


_FINGERPRINT_FNS: dict[Any, Callable] = {}


def fingerprint(tree: Any) -> tuple[dict[str, int], bool]:
    """({leaf path: uint32 fingerprint}, whether every float leaf is finite)."""
    paths_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = [leaf for _, leaf in paths_leaves]
    # replicated results: every process of a multi-host run can read them
    mesh = next((x.sharding.mesh for x in leaves
                 if isinstance(getattr(x, "sharding", None), jax.sharding.NamedSharding)), None)
    if mesh not in _FINGERPRINT_FNS:
        out = None if mesh is None else jax.sharding.NamedSharding(mesh,
                                                                   jax.sharding.PartitionSpec())
        _FINGERPRINT_FNS[mesh] = jax.jit(_fingerprint_and_finite, out_shardings=out)
    fps, finite = _FINGERPRINT_FNS[mesh](leaves)
    fps = np.asarray(jax.device_get(fps))
    names = [jax.tree_util.keystr(p) for p, _ in paths_leaves]
    return {n: int(f) for n, f in zip(names, fps)}, bool(jax.device_get(finite))


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    meta: dict  # what `save(meta=...)` stored (e.g. skipped_steps)


class _Unreadable(Exception):
    """A checkpoint that exists but cannot be restored (why: the message)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _read_reason(e: BaseException) -> str:
    """Why a restore failed, in a line: the TensorStore error under Orbax's wrapper (which only
    names the array slice), without its spec dump."""
    while (e.__cause__ is not None and "TensorStore" in str(e)
           and not isinstance(e, (json.JSONDecodeError, OSError))):
        e = e.__cause__
    line = _first_line(e).split(" [tensorstore_spec")[0]
    return f"{type(e).__name__}: {line}" if isinstance(e, json.JSONDecodeError) else line


def _os_reason(e: BaseException) -> str:
    """'No space left on device [errno 28]' for an OS-level write failure (TensorStore reports
    those inside a long message), else the message's first line."""
    if isinstance(e, OSError) and e.errno:
        return f"{e.strerror or os.strerror(e.errno)} [errno {e.errno}]"
    m = re.search(r"os_error_code='?(\d+)", str(e))
    if m:
        return f"{os.strerror(int(m.group(1)))} [errno {m.group(1)}]"
    return _first_line(e)


class _QuietOrbax(logging.Filter):
    """Drops Orbax's own log records. It logs every failure it then raises, with tracebacks,
    and warns about routine things (a save without eval metrics); jaxlm reports what Orbax
    raises as one line instead. Also drops asyncio's reports of Orbax's abandoned writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname.replace("\\", "/"):
            return False
        if record.name != "asyncio":
            return True
        text = record.getMessage()
        return not ("/orbax/" in text or "tensorstore_spec" in text)


_QUIET = _QuietOrbax()


def _from_orbax(unraisable: Any) -> bool:
    """An unraisable error left behind by a failed Orbax read or write: 'Event loop is closed'
    from TensorStore callbacks into Orbax's closed loop, or Orbax coroutines dropped with their
    error (printed as tracebacks at random moments, even at exit, after jaxlm reported it)."""
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename.replace("\\", "/"):
        return True
    tb = unraisable.exc_traceback
    while tb is not None:
        if "/orbax/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


def _quiet_orbax() -> None:
    """Installs the filters above, and an unraisable hook that drops what `_from_orbax` names."""
    for name in ("absl", "asyncio"):
        if _QUIET not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_QUIET)
    previous = sys.unraisablehook
    if getattr(previous, "_jaxlm", False):
        return

    def hook(unraisable: Any) -> None:
        if not _from_orbax(unraisable):
            previous(unraisable)

    hook._jaxlm = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _eval_loss(metrics: Any) -> float:
    return float(metrics["eval_loss"])


class Checkpointer:
    """Saves and restores a run's checkpoints in `directory` (see the module docstring)."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        _quiet_orbax()
        keep_policy = ocp_managers.AnyPreservationPolicy([
            ocp_managers.LatestN(n=keep),
            ocp_managers.BestN(get_metric_fn=_eval_loss, reverse=True, n=1,
                               keep_checkpoints_without_metrics=False),
        ])
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=True, preservation_policy=keep_policy,
                best_fn=_eval_loss, best_mode="min",  # metrics are written only with a best_fn
            ),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
        )
        self._in_flight: Optional[int] = None  # step of the asynchronous save being written

    def step_path(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def best_step(self) -> Optional[int]:
        """The kept checkpoint with the lowest eval loss (the latest when none has one)."""
        return self._manager.best_step()

    # -- saving ---------------------------------------------------------------------------

    def save(
        self, step: int, state: Any, data_iterator: Optional[Any] = None, *,
        eval_loss: Optional[float] = None, meta: Optional[dict] = None,
        config: Optional[dict] = None,
    ) -> None:
        """Starts an asynchronous save of `state` (and the data iterator's position).

        Raises NonFiniteError rather than write a state with a non-finite float in it, and
        JaxlmError when this or the previous save cannot be written (the checkpoints already
        committed stay as they are).
        """
        self.wait()  # one save in flight; surfaces the previous save's error, if any
        fps, finite = fingerprint(state)
        if not finite:
            raise NonFiniteError(
                f"the train state at step {step} holds non-finite values; not writing it as "
                f"checkpoint {self.step_path(step)} (the newest good checkpoint is "
                f"{self._newest_other(step) or 'none'})"
            )
        items = {
            "state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave({"step": step, "fingerprint": fps, **(meta or {})}),
        }
        if data_iterator is not None:
            items["data"] = ocp.args.JsonSave(data_iterator.get_state())
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        ranked = eval_loss is not None and bool(np.isfinite(eval_loss))
        metrics = {"eval_loss": float(eval_loss)} if ranked else None
        self._in_flight = step
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                               force=True)
        except Exception as e:  # noqa: BLE001 - any write failure is reported the same way
            raise self._write_error(step, e) from None

    def wait(self) -> None:
        """Blocks until the save in flight is committed; raises JaxlmError if it failed."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            step, self._in_flight = self._in_flight, None
            raise self._write_error(step, e) from None
        self._in_flight = None

    def _newest_other(self, step: Optional[int]) -> Optional[pathlib.Path]:
        done = [int(p.name) for p in self.directory.iterdir()
                if p.is_dir() and p.name.isdigit() and int(p.name) != step] \
            if self.directory.is_dir() else []
        return self.step_path(max(done)) if done else None

    def _write_error(self, step: Optional[int], e: BaseException) -> JaxlmError:
        what = f"checkpoint {self.step_path(step)}" if step is not None else "a checkpoint"
        prev = self._newest_other(step)
        kept = (f"the previous checkpoint {prev} is intact; re-run the same command to resume "
                "from it" if prev else "no earlier checkpoint exists")
        return JaxlmError(f"could not write {what}: {_os_reason(e)}; {kept}")

    # -- restoring ------------------------------------------------------------------------

    def restore(
        self, step: int, abstract_state: Any, shardings: Any, data_iterator: Optional[Any] = None
    ) -> Any:
        """The state at `step`, placed with `shardings`; restores `data_iterator` in place."""
        try:
            return self._restore(step, abstract_state, shardings, data_iterator).state
        except _Unreadable as e:
            raise JaxlmError(f"cannot restore checkpoint {self.step_path(step)}: {e}") from None

    def _restore(self, step: int, abstract_state: Any, shardings: Any,
                 data_iterator: Optional[Any]) -> Restored:
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
        )
        items = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            meta = dict(restored["meta"])
            fps, _ = fingerprint(restored["state"])
            if fps != meta.get("fingerprint") or meta.get("step") != step:
                raise _Unreadable("its contents do not match the fingerprint written with it")
            if data_iterator is not None:
                data_iterator.set_state(grain_state_from_json(restored["data"]))
        except _Unreadable:
            raise
        except Exception as e:  # noqa: BLE001 - missing, truncated or garbled files all land here
            raise _Unreadable(_read_reason(e)) from None
        meta.pop("fingerprint", None)
        return Restored(step, restored["state"], meta)

    def restore_latest(
        self, abstract_state: Any, shardings: Any, data_iterator: Optional[Any] = None, *,
        log: Callable[[str], None] = lambda msg: None,
    ) -> Optional[Restored]:
        """The newest checkpoint that restores whole (None when there is no checkpoint).

        Damaged newer ones are reported through `log` and moved to `checkpoints.corrupt/`;
        if every checkpoint is damaged, raises JaxlmError and changes nothing.
        """
        failures: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._restore(step, abstract_state, shardings, data_iterator)
            except _Unreadable as e:
                failures.append((step, str(e)))
                continue
            for bad, why in failures:
                log(f"jaxlm: warning: checkpoint {self.step_path(bad)} is damaged ({why}); "
                    f"skipped in favour of step {step}")
            self._quarantine([bad for bad, _ in failures], log)
            return restored
        if failures:
            listed = "; ".join(f"{self.step_path(s)}: {why}" for s, why in failures)
            raise JaxlmError(
                f"no checkpoint in {self.directory} can be restored ({listed}); nothing was "
                f"changed: move the damaged checkpoints away to start over, or use a new --workdir"
            )
        return None

    def _quarantine(self, steps: list[int], log: Callable[[str], None]) -> None:
        """Moves damaged step directories aside, so that training past them can save again."""
        if not steps:
            return
        if jax.process_index() == 0:
            dest_root = self.directory.parent / CORRUPT_DIR
            dest_root.mkdir(exist_ok=True)
            for step in steps:
                dest, n = dest_root / str(step), 1
                while dest.exists():
                    dest, n = dest_root / f"{step}.{n}", n + 1
                os.rename(self.step_path(step), dest)
                log(f"jaxlm: moved the damaged checkpoint {self.step_path(step)} to {dest}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxlm_checkpoint_quarantine")
        self._manager.reload()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()


# -- params only: generation, export, fine-tuning from a run (no optimizer state is read) ------


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
        raise JaxlmError(f"cannot read the parameters in {path}: {_first_line(e)}") from None
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
