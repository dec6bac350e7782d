"""jaxlm.scaling.report: reading runs.csv; report.md (its diagnostics first)."""


import numpy as np
import pytest

from scaling_helpers import isoflop_grid, random_constants, write_csv


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


# ------------------------------------------------------------------ report.md


def _edge_and_clean_fits():
    """Two families of one law: "edge" has one bracketed budget of three (Approach 2 not
    fitted), "clean" a bracketed grid."""
    from jaxlm.scaling.fit import fit_all

    rng = np.random.default_rng(13)
    k = random_constants(rng)
    edge = isoflop_grid(rng, k, noise=0.002, budgets=np.geomspace(1e17, 1e19, 3),
                        shift=[0, 1.4, -1.4])
    clean = isoflop_grid(rng, k, noise=0.002)
    return {"edge": fit_all(*edge, n_boot=0), "clean": fit_all(*clean, n_boot=0,
                                                               irreducible=False)}


def test_report_starts_with_the_diagnostics_in_words():
    from jaxlm.scaling import diagnostics as D
    from jaxlm.scaling.report import WARN, markdown

    fits = _edge_and_clean_fits()
    assert D.family_diagnostics("clean", fits["clean"]) == []
    text = markdown(fits, "runs.csv", 0.95, 0)
    sections = text.split("\n## ")
    assert sections[1].startswith("Diagnostics\n"), "the diagnostics come first"
    top = sections[1]
    assert "the numbers they name are not results" in top
    assert "### edge" in top and "### clean" not in top
    assert "Not to trust: " in top and "`approach2`" in top
    assert ("N_opt(C) not fitted: 1 of 3 IsoFLOP budgets have a minimum bracketed by the "
            "sampled sizes (need 2)") in top
    assert top.count("left out of Approach 2") == 2  # the two unbracketed budgets
    # the tables mark what the warnings name, and only that
    row = next(r for r in text.splitlines() if r.startswith("| N_opt ~ C^a (Approach 2) |"))
    cells = row.split(" | ")
    assert cells[1] == f"not fitted {WARN}" and WARN not in cells[2]
    assert "| C | sizes (count) | lowest loss at N | parabola minimum N | used |" in text
    assert text.count("| no: not bracketed: ") == 2


def test_report_without_diagnostics_says_what_was_checked():
    from jaxlm.scaling.report import WARN, markdown

    fits = _edge_and_clean_fits()
    text = markdown({"clean": fits["clean"]}, "runs.csv", 0.95, 0)
    top = text.split("\n## ")[1]
    assert top.startswith("Diagnostics\n\nNone: every IsoFLOP minimum is bracketed")
    assert WARN not in text
