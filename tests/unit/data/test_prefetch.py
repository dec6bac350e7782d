"""jaxlm.data.prefetch: the device prefetcher's state."""

from __future__ import annotations

import pytest

from jaxlm.data.prefetch import DevicePrefetcher


# ---------------------------------------------------------------------------------------------
# device prefetch


class _Counter:
    """A checkpointable iterator over 0, 1, 2, ..."""

    def __init__(self):
        self.i = 0

    def __next__(self):
        self.i += 1
        return self.i - 1

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetcher_state_is_the_next_batch_returned(size):
    puts = []
    it = _Counter()
    pf = DevicePrefetcher(it, lambda x: puts.append(x) or x * 10, size)
    assert [next(pf) for _ in range(5)] == [0, 10, 20, 30, 40]
    assert it.i == 5 + size  # the wrapped iterator runs `size` ahead ...
    assert len(puts) == 5 + size  # ... and those batches were already put on the devices
    state = pf.get_state()
    assert state == {"i": 5}  # ... but the checkpointed position is the next one trained on
    fresh = DevicePrefetcher(_Counter(), lambda x: x * 10, size)
    fresh.set_state(state)
    assert [next(fresh) for _ in range(3)] == [50, 60, 70]
    pf.set_state({"i": 1})
    assert next(pf) == 10
