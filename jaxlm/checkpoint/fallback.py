"""The one walk over a run's checkpoints, newest first, to the newest one that reads whole:
training's restore (`Checkpointer.restore_latest`) and every reader (generation, evaluation,
export, `train.init_from`, the config kept in a checkpoint) go through `newest_readable`, so a
damaged newest checkpoint is skipped, with a warning, by all of them alike."""

from __future__ import annotations

import pathlib
from typing import Callable, Iterable, Optional, TypeVar

from jaxlm.errors import JaxlmError

T = TypeVar("T")


class Unreadable(Exception):
    """A checkpoint that exists but cannot be read (why: the message)."""


def step_dirs(directory: str | pathlib.Path) -> list[int]:
    """The step directories under `checkpoints/` (a stray file named with digits is none)."""
    d = pathlib.Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())


def newest_readable(
    directory: pathlib.Path, steps: Iterable[int], read: Callable[[int], T],
    log: Callable[[str], None],
) -> Optional[tuple[int, T, list[int]]]:
    """(step, what `read(step)` returned, the newer steps skipped as damaged) for the newest of
    `steps` that `read` reads without raising Unreadable; None when there are no steps.

    Each skipped step is reported through `log` with its path and why; when none reads,
    raises JaxlmError naming each of them (nothing is changed here either way).
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(steps, reverse=True):
        try:
            value = read(step)
        except Unreadable as e:
            failures.append((step, str(e)))
            continue
        for bad, why in failures:
            log(f"jaxlm: warning: checkpoint {directory / str(bad)} is damaged ({why}); "
                f"skipped in favour of step {step}")
        return step, value, [bad for bad, _ in failures]
    if failures:
        listed = "; ".join(f"{directory / str(s)}: {why}" for s, why in failures)
        raise JaxlmError(
            f"no checkpoint in {directory} can be restored ({listed}); nothing was "
            f"changed: move the damaged checkpoints away to start over, or use a new --workdir"
        )
    return None
