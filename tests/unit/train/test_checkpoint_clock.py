"""train.checkpoint_every_minutes: checkpoints by time, decided at log steps, on a fake clock
(jaxlm.train.checkpoint_clock); the two-process agreement is in test_sharding.py."""

from __future__ import annotations

import functools

import pytest

from helpers import _ckpt_steps, run
from jaxlm.errors import JaxlmError
from jaxlm.config import load_config
from jaxlm.train import loop
from jaxlm.train.checkpoint_clock import CheckpointClock


class FakeClock:
    """Seconds that advance by `tick` at every reading."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_clock_is_due_once_the_interval_passed_since_the_last_save():
    fake = FakeClock(20.0)
    clock = CheckpointClock(1.0, fake)  # started at 20 s
    assert [clock.due() for _ in range(3)] == [False, False, True]  # 40, 60, 80 s
    clock.saved()  # at 100 s
    assert [clock.due() for _ in range(3)] == [False, False, True]
    off = CheckpointClock(0.0, fake)
    assert not off.enabled and not any(off.due() for _ in range(10))


def test_a_run_checkpoints_by_time_at_log_steps(tmp_path, monkeypatch):
    # 30 s a reading, one minute between saves: due at every second check after a save. The
    # loop reads the clock at its start, at each log step (every step here) and at each save.
    monkeypatch.setattr(loop, "CheckpointClock",
                        functools.partial(CheckpointClock, clock=FakeClock(30.0)))
    run(tmp_path, "train.steps=6", "train.log_every=1", "train.checkpoint_every=0",
        "train.checkpoint_every_minutes=1", "train.keep_checkpoints=10", "train.eval_every=0")
    # readings: start 30; step 1: 60 (30 s); step 2: 90 (60 s, save; 120); step 3: 150;
    # step 4: 180 (60 s, save; 210); step 5: 240; step 6: the last step, saved anyway
    assert _ckpt_steps(tmp_path) == [2, 4, 6]


def test_minutes_must_not_be_negative():
    with pytest.raises(JaxlmError, match="train.checkpoint_every_minutes"):
        load_config(None, ["train.checkpoint_every_minutes=-1"])
