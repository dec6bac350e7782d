"""jaxlm.scaling.results: runs.csv rows, and rows cut short by a crash (issue 21.7)."""

from __future__ import annotations

import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling.results import COLUMNS, append_row, read_rows
from scaling_helpers import rows


def _row(name: str, status: str = "ok", **extra) -> dict:
    return {"name": name, "family": "transformer", "status": status, "params": 100,
            "loss": 1.5, **extra}


def test_rows_round_trip_and_the_last_row_per_name_wins(tmp_path):
    path = tmp_path / "runs.csv"
    append_row(path, _row("a", status="failed", error="boom,\\nwith a comma"))
    append_row(path, _row("b"))
    append_row(path, _row("a"))
    rows = read_rows(path)
    assert set(rows) == {"a", "b"} and rows["a"]["status"] == "ok"
    assert list(rows["b"]) == list(COLUMNS)


def test_rows_of_older_sweeps_without_the_condition_columns_are_read(tmp_path):
    import csv
    import types

    from jaxlm.config import load_config
    from jaxlm.scaling.compare import CONDITION_COLUMNS
    from jaxlm.scaling.results import OPTIONAL_COLUMNS, REQUIRED, conditions

    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as f:  # runs.csv as sweeps wrote it before those columns
        w = csv.DictWriter(f, fieldnames=REQUIRED, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerow({k: "" for k in REQUIRED} | _row("old"))
    assert set(read_rows(path)) == {"old"}
    assert set(OPTIONAL_COLUMNS) <= set(CONDITION_COLUMNS) <= set(COLUMNS)
    cfg = load_config(None, ["data.tokenizer=sentencepiece", "data.sp_vocab_size=512"])
    iso = types.SimpleNamespace(isoflop=types.SimpleNamespace(flops_rule="6N"))
    assert conditions(cfg, iso) == {"corpus": "stdlib", "tokenizer": "sentencepiece:512",
                                    "flops_rule": "6N"}


def test_a_truncated_last_row_is_not_a_finished_member(tmp_path):
    path = tmp_path / "runs.csv"
    append_row(path, _row("a"))
    append_row(path, _row("b", error="a long message at the end of the row"))
    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) - 10, whole.rfind(b"b,") + 20):
        path.write_bytes(whole[:cut])  # a crash or a full disk part-way through row "b"
        assert set(read_rows(path)) == {"a"}, cut
    path.write_bytes(whole)
    assert set(read_rows(path)) == {"a", "b"}


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """runs.csv saved again by a spreadsheet starts with a BOM: its rows are still read, and
    appends still land under the same header."""
    path = tmp_path / "runs.csv"
    append_row(path, _row("a"))
    path.write_bytes("\ufeff".encode() + path.read_bytes())
    append_row(path, _row("b"))
    assert set(read_rows(path)) == {"a", "b"}


def test_a_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(JaxlmError) as info:
        read_rows(path)
    assert str(path) in str(info.value) and "UTF-8" in str(info.value)


def _write_records(workdir, worker, n):
    from jaxlm.scaling.results import write_record

    for i in range(n):
        write_record(workdir, _row(f"w{worker}-{i}", error="x" * 300))  # its own member
        write_record(workdir, _row("shared", error=f"{worker}-{i}" * 50))  # one member, all


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # fork: the children touch no JAX
def test_concurrent_record_writers_never_lose_or_duplicate_a_row(tmp_path):
    """Four processes write records while runs.csv is compiled again and again: every compiled
    table has each name at most once, every row whole; the last one has every member."""
    import multiprocessing as mp

    from jaxlm.scaling.results import compile_runs

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_records, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    tables = []
    while any(p.is_alive() for p in procs):
        tables.append(rows(compile_runs(tmp_path)))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    tables.append(rows(compile_runs(tmp_path)))
    for table in tables:
        names = [r["name"] for r in table]
        assert len(names) == len(set(names))
        assert all(r["error"] == "x" * 300 or r["name"] == "shared" for r in table)
        assert all(len(r["error"]) in (300, 150, 200) for r in table if r["name"] == "shared")
    assert len(tables) > 2  # compiled while the writers wrote
    assert sorted(r["name"] for r in tables[-1]) == sorted(
        ["shared"] + [f"w{w}-{i}" for w in range(4) for i in range(40)])
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.endswith(".tmp")]
