"""Reading a sweep's runs.csv (or any CSV of runs) into per-family arrays for the fits.

Input columns (header names, case-insensitive): `params` (non-embedding N) and `loss` are
required, plus `tokens` (D) or `flops` (C) or both; with only one of them the other is derived
from C = 6 N D. Optional: `name` (or `run`), `family` (each family is fitted separately and the
families compared), `budget` (an IsoFLOP budget label; without it budgets are found by grouping
`flops`), `status` (rows whose status is not ok/finished/done are ignored, e.g. failed runs;
`jaxlm sweep` writes ok), `role` (trunks are skipped; held-out runs are kept apart), the hp
axes, `seed` and the run conditions. A name in several usable rows counts once (its last row).
"""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.scaling import compare as K
from jaxlm.scaling import holdout_runs as H
from jaxlm.scaling import tuning as T

OK_STATUS = ("ok", "finished", "done", "")


def _num(row: dict, key: str, lineno: int) -> float:
    v = (row.get(key) or "").strip()
    try:
        x = float(v)
    except ValueError:
        raise JaxlmError(f"row {lineno}: {key} is {v!r}, not a number") from None
    if math.isnan(x):
        raise JaxlmError(f"row {lineno}: {key} is NaN; remove the row or mark its status failed")
    return x


def read_runs(path) -> dict:
    """{family: {"N", "D", "C", "L": arrays, "names": list, "budget": array or None}}."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise JaxlmError(f"input file not found: {path}")
    try:  # utf-8-sig: a header written by Excel starts with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            rows = [({k.strip().lower(): v for k, v in r.items() if k}, i + 2)
                    for i, r in enumerate(reader)]
    except UnicodeDecodeError as e:
        raise JaxlmError(f"{path}: not a UTF-8 text CSV file (it holds the byte "
                         f"0x{e.object[e.start]:02x}; save it as UTF-8)") from None
    except csv.Error as e:
        raise JaxlmError(f"{path}: not a readable CSV file ({e})") from None
    except OSError as e:
        raise JaxlmError(f"cannot read {path}: {e.strerror}") from None
    if not header:
        raise JaxlmError(f"{path}: empty file (no CSV header)")
    if any("\x00" in c for c in header if c):
        raise JaxlmError(f"{path}: not a text CSV file (its header holds NUL bytes)")
    cols = {c.strip().lower(): c for c in header if c}
    missing = [c for c in ("params", "loss") if c not in cols]
    if "tokens" not in cols and "flops" not in cols:
        missing.append("tokens or flops")
    if missing:
        raise JaxlmError(f"{path}: missing column(s) {', '.join(missing)} (have: "
                         f"{', '.join(cols)})")
    fams: dict = {}
    held: dict = {}  # role holdout: left out of every fit, predicted (holdout_runs)
    last = {}  # a resumed sweep may append a run twice: its last usable row counts
    for r, lineno in rows:
        if (r.get("status") or "").strip().lower() in OK_STATUS and (r.get("name") or "").strip():
            last[r["name"].strip()] = lineno
    for r, lineno in rows:
        if (r.get("status") or "").strip().lower() not in OK_STATUS:
            continue
        if (r.get("role") or "").strip().lower() == "trunk":  # constant lr: not cooled down
            continue
        name = (r.get("name") or "").strip()
        if name and last.get(name) != lineno:
            continue
        n, loss = _num(r, "params", lineno), _num(r, "loss", lineno)
        d = _num(r, "tokens", lineno) if "tokens" in cols else None
        c = _num(r, "flops", lineno) if "flops" in cols else None
        for key, v in (("params", n), ("loss", loss), ("tokens", d), ("flops", c)):
            if v is not None and not v > 0:
                raise JaxlmError(f"row {lineno}: {key} is {v:g}; scaling fits need positive "
                                 "values")
        d = c / (6 * n) if d is None else d
        c = 6 * n * d if c is None else c
        fam = (r.get("family") or "").strip() or "all"
        if H.is_holdout_row(r):
            H.add(held, fam, name or f"row{lineno}", n, d, c, loss)
            continue
        f = fams.setdefault(fam, {"N": [], "D": [], "C": [], "L": [], "names": [], "budget": [],
                                  "hp": {c: [] for c in (*T.HP_COLUMNS, "seed")},
                                  "conditions": {c: set() for c in K.CONDITION_COLUMNS}})
        for col in K.CONDITION_COLUMNS:  # data, tokenizer, ...: the families must share them
            f["conditions"][col].add((r.get(col) or "").strip())
        for col in (*T.HP_COLUMNS, "seed"):
            v = (r.get(col) or "").strip()
            f["hp"][col].append(_num(r, col, lineno) if v else float("nan"))
        f["N"].append(n), f["D"].append(d), f["C"].append(c), f["L"].append(loss)
        f["names"].append((r.get("name") or r.get("run") or f"row{lineno}").strip())
        f["budget"].append((r.get("budget") or "").strip())
    H.attach(fams, held, str(path))
    if not fams:
        raise JaxlmError(f"{path}: no usable rows (rows whose status is not ok/finished/done "
                         "are ignored)")
    for f in fams.values():
        for k in ("N", "D", "C", "L"):
            f[k] = np.asarray(f[k], dtype=np.float64)
        f["budget"] = f["budget"] if all(f["budget"]) and "budget" in cols else None
        T.select(f)  # the best run per (N, D) when hp axes gave several
    return fams


__all__ = ["OK_STATUS", "read_runs"]
