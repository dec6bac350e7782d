"""Checkpoints by time (`train.checkpoint_every_minutes`), alongside the step interval.

Every process must save the same step (an Orbax save is a collective), but their clocks
differ. So the loop asks only at its sync points (log steps, where processes already agree on
stopping with one tiny all-gather) and the answer is process 0's: `CheckpointClock.due` reads
the local clock, and the loop takes process 0's flag from the gathered ones. Any save, by step
or by time, restarts the interval.
"""

from __future__ import annotations

import time
from typing import Callable


class CheckpointClock:
    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        """`minutes` <= 0: never due; `clock`: seconds (monotonic), injectable for tests."""
        self.seconds, self._clock = 60.0 * minutes, clock
        self._since = clock()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def due(self) -> bool:
        """Whether the interval has passed since the last save (or the start)."""
        return self.enabled and self._clock() - self._since >= self.seconds

    def saved(self) -> None:
        self._since = self._clock()


__all__ = ["CheckpointClock"]
