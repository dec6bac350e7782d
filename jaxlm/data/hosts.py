"""Per-host input (`data.input=per_host`): which documents a process reads, and the data
position of a run whose processes each hold their own.

The train documents are split into `count` input shards, one per group of batch rows that a
process holds (`InputShard.of_rows`): shard i reads documents i, i+count, ... and packs them
into its own rows of each global batch, so each process tokenizes 1/count of the stream. (Two
processes holding the same rows, e.g. a tensor axis across hosts, read the same shard.) With
one shard this is the global stream exactly, checkpoint format included.

`HostPosition` wraps a process's train iterator; its `get_state()` is a collective: every
process's position gathered into one JSON value, `{"input_shards": count, "states": [...]}`
(one per shard), which process 0 writes. `set_state` takes this process's shard back, and
refuses with a JaxlmError (one line, both counts) a position saved by another number of shards
or by the other mode: the data stream of a per-host run depends on its host count.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator

import jax
import numpy as np

from jaxlm.errors import JaxlmError

SHARDS_KEY = "input_shards"


@dataclasses.dataclass(frozen=True)
class InputShard:
    index: int
    count: int

    @classmethod
    def of_rows(cls, rows: slice, global_batch: int) -> "InputShard":
        """The shard that feeds `rows` (this process's contiguous rows of each global batch)."""
        n = rows.stop - rows.start
        if n <= 0 or global_batch % n or rows.start % n:
            raise JaxlmError(f"data.input=per_host: this process's batch rows {rows.start}:"
                             f"{rows.stop} do not split the global batch of {global_batch} "
                             f"into equal shards; use data.input=global")
        return cls(rows.start // n, global_batch // n)


def allgather_json(value: Any) -> list[Any]:
    """`value` (JSON-serializable) of every process, in process order; a collective."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(rows[i, :n].tobytes()) for i, n in enumerate(sizes)]


def _is_sharded(state: Any) -> bool:
    return isinstance(state, dict) and SHARDS_KEY in state


class HostPosition:
    """A train iterator with the checkpointable position of a whole run (module docstring).

    `mode`: data.input; `shard`: this process's input shard (count 1 in global mode, where
    every process walks the same stream and the state is that stream's position, as saved
    before per-host input existed). `gather`: value -> every process's value (a collective)."""

    def __init__(self, iterator: Any, mode: str, shard: InputShard,
                 gather: Callable[[Any], list[Any]] = allgather_json):
        self._it, self.mode, self.shard, self._gather = iterator, mode, shard, gather

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def get_state(self) -> Any:
        state = self._it.get_state()
        if self.shard.count == 1:
            return state
        states: list[Any] = [None] * self.shard.count
        for index, s in self._gather([self.shard.index, state]):
            states[index] = s
        return {SHARDS_KEY: self.shard.count, "states": states}

    def set_state(self, state: Any) -> None:
        saved = state[SHARDS_KEY] if _is_sharded(state) else 1
        if saved != self.shard.count:
            raise JaxlmError(self._mismatch(saved))
        self._it.set_state(state["states"][self.shard.index] if _is_sharded(state) else state)

    def _mismatch(self, saved: int) -> str:
        if saved == 1:
            return ("cannot resume: the checkpoint holds the position of one data stream "
                    "(data.input=global, or one host), and this launch reads "
                    f"{self.shard.count} per-host input shards (data.input=per_host); resume "
                    "with data.input=global")
        now = ("the global stream (data.input=global)" if self.mode != "per_host" else
               "1 input shard (one host)" if self.shard.count == 1 else
               f"{self.shard.count} per-host input shards")
        return (f"cannot resume: the checkpoint holds the data positions of {saved} per-host "
                f"input shards (data.input=per_host on {saved} hosts), and this launch reads "
                f"{now}; resume on {saved} hosts with data.input=per_host (a per-host run's data "
                f"depends on its host count)")


__all__ = ["InputShard", "HostPosition", "allgather_json"]
