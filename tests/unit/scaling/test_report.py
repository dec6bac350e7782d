"""jaxlm.scaling.report: reading runs.csv."""

import csv

import pytest


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_read_runs_filters_status_dedups_and_derives_tokens(tmp_path):
    from jaxlm.scaling.report import read_runs

    rows = [
        {"name": "a", "family": "t", "status": "preempted", "params": 10, "flops": "", "loss": "",
         "budget": "1e6"},
        {"name": "a", "family": "t", "status": "ok", "params": 10, "flops": 6e6, "loss": 3.0,
         "budget": "1e6"},
        {"name": "b", "family": "t", "status": "failed", "params": 20, "flops": "", "loss": "",
         "budget": "1e6"},
        {"name": "b", "family": "t", "status": "ok", "params": 20, "flops": 6e6, "loss": 2.9,
         "budget": "1e6"},
        {"name": "c", "family": "l", "status": "done", "params": 30, "flops": 6e7, "loss": 2.5,
         "budget": "1e7"},
    ]
    data = read_runs(write_csv(tmp_path / "r.csv", rows))
    assert set(data) == {"t", "l"}
    assert data["t"]["N"].tolist() == [10, 20] and data["t"]["L"].tolist() == [3.0, 2.9]
    assert data["t"]["D"].tolist() == [1e5, 5e4]  # D = C / (6 N)
    assert data["t"]["budget"] == ["1e6", "1e6"]


def test_read_runs_accepts_a_byte_order_mark(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM: the first column is still `params`, not
    a missing column."""
    from jaxlm.scaling.report import read_runs

    path = tmp_path / "excel.csv"
    path.write_bytes("params,tokens,loss\r\n10,100,3.0\r\n20,100,2.9\r\n".encode("utf-8-sig"))
    data = read_runs(path)
    assert data["all"]["N"].tolist() == [10, 20]


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a UTF-8 text CSV file"),
    ("params,tokens,loss,name\n10,100,3.0,caf\xe9\n".encode("latin-1"), "byte 0xe9"),
    (b"params\x00,tokens,loss\n10,100,3.0\n", "NUL"),
], ids=["png", "latin1", "nul"])
def test_read_runs_binary_or_not_utf8_names_the_file(tmp_path, content, message):
    from jaxlm.errors import JaxlmError
    from jaxlm.scaling.report import read_runs

    path = tmp_path / "runs.csv"
    path.write_bytes(content)
    with pytest.raises(JaxlmError) as info:
        read_runs(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)
