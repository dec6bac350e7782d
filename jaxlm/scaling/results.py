"""runs.csv, the sweep's results: one row per finished (or failed, or preempted) member.

Appends hold an exclusive POSIX lock (fcntl.lockf) on runs.csv, so workers on hosts that share
the filesystem append to one file; readers take a shared lock and the last row per name.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pathlib
from typing import TYPE_CHECKING, Any, Optional

from jaxlm.errors import JaxlmError

if TYPE_CHECKING:
    from jaxlm.scaling.plan import Member

RUNS_CSV = "runs.csv"
COLUMNS = ("name", "family", "status", "params", "params_total", "tokens", "flops", "budget",
           "train_loss", "loss", "eval_bpb", "wall_time", "lr", "batch", "steps", "seed",
           "n_layers", "d_model", "seq_len", "role", "b2", "warmup", "error")


def append_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Appends one row (header first if the file is new) under an exclusive fcntl lock."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    with open(path, "a", newline="", encoding="utf-8") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                w.writeheader()
            w.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def read_rows(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The last row per run name. A row cut short by a crash or a full disk is ignored: every
    row `append_row` writes ends with a newline and has every column."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    # utf-8-sig: a file saved again by a spreadsheet may start with a byte-order mark
    with open(path, newline="", encoding="utf-8-sig") as f:
        fcntl.lockf(f, fcntl.LOCK_SH)  # not while a writer is half-way through a row
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise JaxlmError(f"{path}: not a UTF-8 text CSV file (it holds the byte "
                             f"0x{e.object[e.start]:02x})") from None
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # the unterminated last row
    rows = csv.DictReader(io.StringIO(text, newline=""))
    return {r["name"]: r for r in rows
            if r.get("name") and all(r.get(k) is not None for k in COLUMNS)}


def member_row(m: Member, status: str, **extra: Any) -> dict[str, Any]:
    """A member's row: its planned values, its status and `extra` columns (results, error)."""
    row = {"name": m.name, "family": m.family, "status": status, "params": m.params,
           "params_total": m.params_total, "tokens": m.tokens, "flops": f"{m.flops:.6g}",
           "budget": f"{m.budget:.6g}" if m.budget is not None else None, "lr": m.lr,
           "batch": m.batch, "steps": m.steps, "seed": m.seed, "n_layers": m.n_layers,
           "d_model": m.d_model, "seq_len": m.seq_len, "role": m.role, "b2": m.b2,
           "warmup": m.warmup}
    row.update(extra)
    return row


def fmt_loss(x: Optional[float]) -> Optional[str]:
    return None if x is None else f"{x:.6g}"


__all__ = ["RUNS_CSV", "COLUMNS", "append_row", "read_rows", "member_row", "fmt_loss"]
