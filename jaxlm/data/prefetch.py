"""Prefetch of training batches onto the devices.

`DevicePrefetcher` keeps `size` batches already placed on the devices (`put`, asynchronous in
JAX) ahead of the step that consumes them, so the host-to-device copy of batch t+1 overlaps
step t. It is checkpointed like the iterator it wraps: `get_state()` is the position of the next
batch it will *return*, not of the wrapped iterator (which runs `size` batches ahead), so a
resume replays exactly the batches that were prefetched but not trained on.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator


class DevicePrefetcher:
    def __init__(self, iterator: Any, put: Callable[[Any], Any], size: int = 2):
        """`iterator`: a checkpointable iterator (get_state/set_state, e.g. grain's);
        `put`: host batch -> device batch; `size` >= 0 batches kept ahead (0: none)."""
        self._it, self._put, self._size = iterator, put, size
        self._queue: collections.deque = collections.deque()  # (state before, device batch)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._fill(self._size + 1)
        _, batch = self._queue.popleft()
        self._fill(self._size)  # dispatch the copies of the next batches now
        return batch

    def _fill(self, n: int) -> None:
        while len(self._queue) < n:
            state = self._it.get_state()
            self._queue.append((state, self._put(next(self._it))))

    def get_state(self) -> Any:
        return self._queue[0][0] if self._queue else self._it.get_state()

    def set_state(self, state: Any) -> None:
        self._queue.clear()
        self._it.set_state(state)


__all__ = ["DevicePrefetcher"]
