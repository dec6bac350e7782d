"""A sweep's results: one record per member, compiled into runs.csv (one row per member).

Each member's outcome (ok, failed, preempted) is a small JSON record beside its run directory,
DIR/runs/NAME.result.json, written whole under a temporary name and renamed into place: no
locks, so workers on any hosts (and object storage, `gs://...`, through etils.epath as the
checkpoints use) never lose or interleave rows, and a record is only ever seen whole. The
driver (and `jaxlm fit DIR`) compiles runs.csv from the records (`compile_runs`, itself
written by rename). runs.csv files of older sweeps, whose rows were appended under an fcntl
lock (`append_row`), are still read: a record wins over a row of the same name.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pathlib
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Optional

from etils import epath

from jaxlm.errors import JaxlmError

if TYPE_CHECKING:
    from jaxlm.scaling.plan import Member

RUNS_CSV = "runs.csv"
RUNS_DIR = "runs"  # DIR/runs/NAME: a member's run directory
RECORD_SUFFIX = ".result.json"  # DIR/runs/NAME.result.json: its result record
COLUMNS = ("name", "family", "status", "params", "params_total", "tokens", "flops", "budget",
           "train_loss", "loss", "eval_bpb", "wall_time", "lr", "batch", "steps", "seed",
           "n_layers", "d_model", "seq_len", "role", "b2", "warmup", "error", "corpus",
           "tokenizer", "flops_rule")
# columns the rows of older sweeps lack (they stay readable; their conditions read as unknown in
# jaxlm.scaling.compare, whose CONDITION_COLUMNS, seq_len included, families must share)
OPTIONAL_COLUMNS = ("corpus", "tokenizer", "flops_rule")
REQUIRED = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)


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


def _read_text(path: epath.Path) -> str:
    # utf-8-sig: a file saved again by a spreadsheet may start with a byte-order mark
    if "://" not in str(path):  # local: not while an old-style writer is mid-row
        with open(os.fspath(path), "rb") as f:
            fcntl.lockf(f, fcntl.LOCK_SH)
            try:
                data = f.read()
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN)
    else:
        data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JaxlmError(f"{path}: not a UTF-8 text CSV file (it holds the byte "
                         f"0x{e.object[e.start]:02x})") from None


def read_rows(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The last row per run name. A row cut short by a crash or a full disk is ignored: every
    row `append_row` writes ends with a newline and has every column."""
    path = epath.Path(path)
    if not path.exists():
        return {}
    text = _read_text(path)
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # the unterminated last row
    rows = csv.DictReader(io.StringIO(text, newline=""))
    return {r["name"]: r for r in rows
            if r.get("name") and all(r.get(k) is not None for k in REQUIRED)}


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


def conditions(cfg: Any, spec: Any) -> dict[str, str]:
    """A member's conditions for its row: corpus, tokenizer (with its model file or vocabulary
    size) and the FLOP rule that sized its tokens (a token grid: the counter's flops)."""
    d = cfg.data
    tok = {"hf": f"hf:{d.hf_tokenizer}", "byte": "byte",
           "sentencepiece": f"sentencepiece:{d.sp_model or d.sp_vocab_size}"}
    return {"corpus": d.corpus, "tokenizer": tok.get(d.tokenizer, d.tokenizer),
            "flops_rule": "counter" if spec.isoflop is None else spec.isoflop.flops_rule}


def fmt_loss(x: Optional[float]) -> Optional[str]:
    return None if x is None else f"{x:.6g}"


def _cells(row: dict[str, Any]) -> dict[str, str]:
    """A row as runs.csv holds it: every column, as text ('' for none)."""
    return {k: "" if row.get(k) is None else str(row.get(k)) for k in COLUMNS}


def _replace(path: epath.Path, text: str) -> None:
    """Writes `text` to `path` whole: a temporary file in the same folder, renamed over it."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    tmp.replace(path)


def record_path(workdir: str | os.PathLike, name: str) -> epath.Path:
    return epath.Path(workdir) / RUNS_DIR / f"{name}{RECORD_SUFFIX}"


def write_record(workdir: str | os.PathLike, row: dict[str, Any], attempts: int = 1) -> None:
    """A member's result record, DIR/runs/NAME.result.json, replaced whole (atomic rename)."""
    path = record_path(workdir, row["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, json.dumps({"row": _cells(row), "attempts": attempts}, indent=1) + "\n")


def _load_record(path: epath.Path) -> dict[str, str]:
    try:
        row = json.loads(path.read_text())["row"]
        if not isinstance(row, dict) or not row.get("name"):
            raise ValueError("no row name")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise JaxlmError(f"{path}: not a sweep result record ({type(e).__name__}: {e}); "
                         "delete it to run that member again") from None
    return _cells(row)


def read_record(workdir: str | os.PathLike, name: str) -> Optional[dict[str, str]]:
    path = record_path(workdir, name)
    return _load_record(path) if path.exists() else None


def read_records(workdir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Every member's record in DIR/runs, by name (temporary files of writers are not read)."""
    runs = epath.Path(workdir) / RUNS_DIR
    if not runs.is_dir():
        return {}
    rows = (_load_record(p) for p in runs.glob(f"*{RECORD_SUFFIX}") if not p.name.startswith("."))
    return {r["name"]: r for r in rows}


def sweep_rows(workdir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The sweep's results by name: DIR/runs.csv's rows (older sweeps appended there), with
    every member's record over them."""
    return {**read_rows(epath.Path(workdir) / RUNS_CSV), **read_records(workdir)}


def compile_runs(workdir: str | os.PathLike, order: Iterable[str] = ()) -> epath.Path:
    """Writes DIR/runs.csv (replaced whole) from the results: the names in `order` first (the
    plan's order), then the rest by name. Returns its path."""
    rows = sweep_rows(workdir)
    first = [n for n in dict.fromkeys(order) if n in rows]
    names = first + sorted(set(rows) - set(first))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows[n] for n in names)
    path = epath.Path(workdir) / RUNS_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, buf.getvalue())
    return path


__all__ = ["RUNS_CSV", "RUNS_DIR", "RECORD_SUFFIX", "COLUMNS", "append_row", "read_rows",
           "member_row", "conditions", "OPTIONAL_COLUMNS", "fmt_loss", "record_path", "write_record", "read_record",
           "read_records", "sweep_rows", "compile_runs"]
