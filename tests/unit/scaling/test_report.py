"""jaxlm.scaling.report: reading runs.csv."""

import csv


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
