"""The training checkpoints of a run: `Checkpointer` (see the package docstring)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from jaxlm.checkpoint.fallback import Unreadable, newest_readable
from jaxlm.checkpoint.fingerprint import fingerprint, json_fingerprint
from jaxlm.checkpoint.reasons import os_reason, read_reason
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


class _UnretrievedFailures(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" records (each with a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


_UNRETRIEVED = _UnretrievedFailures()


def _quiet_unretrieved_write_failures() -> None:
    """A checkpoint write that fails (a full disk) fails in several of orbax's asyncio tasks; the
    one whose error is raised becomes the run's one-line error, and Python logs every other one's
    traceback when it is garbage-collected. Once the write failed, those say nothing new."""
    logger = logging.getLogger("asyncio")
    if _UNRETRIEVED not in logger.filters:
        logger.addFilter(_UNRETRIEVED)


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    meta: dict  # what `save(meta=...)` stored (e.g. skipped_steps)


def _eval_loss(metrics: Any) -> float:
    return float(metrics["eval_loss"])


class Checkpointer:
    """Saves and restores a run's checkpoints in `directory` (see the module docstring)."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
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
        meta = {"step": step, "fingerprint": fps, **(meta or {})}
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            position = data_iterator.get_state()
            meta["data_fingerprint"] = json_fingerprint(position)
            items["data"] = ocp.args.JsonSave(position)
        items["meta"] = ocp.args.JsonSave(meta)
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
        _quiet_unretrieved_write_failures()
        what = f"checkpoint {self.step_path(step)}" if step is not None else "a checkpoint"
        prev = self._newest_other(step)
        kept = (f"the previous checkpoint {prev} is intact; re-run the same command to resume "
                "from it" if prev else "no earlier checkpoint exists")
        return JaxlmError(f"could not write {what}: {os_reason(e)}; {kept}")

    # -- restoring ------------------------------------------------------------------------

    def restore(
        self, step: int, abstract_state: Any, shardings: Any, data_iterator: Optional[Any] = None
    ) -> Any:
        """The state at `step`, placed with `shardings`; restores `data_iterator` in place."""
        try:
            return self._restore(step, abstract_state, shardings, data_iterator).state
        except Unreadable as e:
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
                raise Unreadable("its contents do not match the fingerprint written with it")
            if data_iterator is not None:
                # checkpoints from before the data fingerprint have none to check against
                want = meta.get("data_fingerprint")
                if want is not None and want != json_fingerprint(restored["data"]):
                    raise Unreadable("its data-iterator position does not match the fingerprint "
                                     "written with it")
                data_iterator.set_state(grain_state_from_json(restored["data"]))
        except (Unreadable, JaxlmError):  # JaxlmError: a whole position this launch cannot take
            raise
        except Exception as e:  # noqa: BLE001 - missing, truncated or garbled files all land here
            raise Unreadable(read_reason(e)) from None
        meta.pop("fingerprint", None)
        meta.pop("data_fingerprint", None)
        return Restored(step, restored["state"], meta)

    def restore_latest(
        self, abstract_state: Any, shardings: Any, data_iterator: Optional[Any] = None, *,
        log: Callable[[str], None] = lambda msg: None,
    ) -> Optional[Restored]:
        """The newest checkpoint that restores whole (None when there is no checkpoint).

        Damaged newer ones are reported through `log` and moved to `checkpoints.corrupt/`;
        if every checkpoint is damaged, raises JaxlmError and changes nothing.
        """
        found = newest_readable(
            self.directory, self._manager.all_steps(),
            lambda step: self._restore(step, abstract_state, shardings, data_iterator), log)
        if found is None:
            return None
        _, restored, damaged = found
        self._quarantine(damaged, log)
        return restored

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
