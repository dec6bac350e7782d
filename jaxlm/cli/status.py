"""What a command hands back to `jaxlm.cli.main`, which alone turns it into an exit status."""

from __future__ import annotations

import enum


class Status(enum.Enum):
    OK = "ok"  # finished
    FAILED = "failed"  # sweep: some member failed (its row in runs.csv says why)
    PREEMPTED = "preempted"  # stopped by SIGTERM/SIGINT after saving a checkpoint: re-run
    FLAGGED = "flagged"  # fit --strict: the fit has warning-level diagnostics (outputs written)
