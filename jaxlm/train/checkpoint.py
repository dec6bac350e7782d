"""Orbax checkpoints (the only module that touches Orbax).

A checkpoint step directory holds `state` (params, optimizer state, step, RNG: restored onto
the abstract sharded state, so any mesh the parameters fit works) and `data` (the Grain
iterator state, as JSON). Saves are asynchronous; Orbax commits each step atomically.
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from jaxlm.errors import JaxlmError


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


class Checkpointer:
    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Optional[Any] = None) -> None:
        """Starts an asynchronous save of `state` (and the data iterator's position)."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonSave(data_iterator.get_state())
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self, step: int, abstract_state: Any, shardings: Any, data_iterator: Optional[Any] = None
    ) -> Any:
        """The state at `step`, placed with `shardings`; restores `data_iterator` in place."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
        )
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise JaxlmError(
                f"cannot restore checkpoint {self.directory / str(step)}: {str(e).splitlines()[0]}"
            ) from None
        if data_iterator is not None:
            data_iterator.set_state(grain_state_from_json(restored["data"]))
        return restored["state"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
