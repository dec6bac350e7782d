"""The `jaxlm fit` command: degenerate input, its outputs (fit.json, report, plots)."""

import json
import pathlib

import numpy as np
import pytest

from helpers import REPO_ROOT
from jaxlm.cli import EXIT_FLAGGED, main
from scaling_helpers import isoflop_grid, random_constants, write_csv

DEMO_CSV = REPO_ROOT / "tests" / "data" / "old_cpu_demo_runs.csv"  # the old demo sweep (issue 15)


def runs_rows(seed=0, families=("transformer", "lstm")):
    rng = np.random.default_rng(seed)
    rows = []
    for j, fam in enumerate(families):
        k = random_constants(rng)
        N, D, C, L = isoflop_grid(rng, k, noise=0.005, budgets=np.geomspace(1e17, 1e19, 4),
                                  per_budget=5)
        C = C * 1.05  # measured FLOPs include attention: not exactly 6 N D
        for i in range(N.size):
            rows.append({"name": f"{fam}-{i}", "family": fam, "params": int(N[i]),
                         "params_total": int(N[i] * 1.3), "tokens": int(D[i]),
                         "flops": C[i], "loss": L[i], "status": "ok"})
    rows.append({"name": "broken", "family": families[0], "params": 10, "params_total": 10,
                 "tokens": "", "flops": "", "loss": "", "status": "failed"})
    return rows


@pytest.mark.parametrize("case, message", [
    ("missing_file", "not found"),
    ("missing_column", "missing column"),
    ("nan_row", "NaN"),
    ("nonpositive", "positive"),
    ("too_few", "too few points"),
    ("one_budget_two_sizes", "at least 3"),
])
def test_cli_degenerate_input_exit_2_one_line(tmp_path, capsys, case, message):
    rows = [{k: r[k] for k in ("params", "tokens", "flops", "loss", "status")}
            for r in runs_rows(families=("t",))]
    extra = []
    if case == "missing_column":
        rows = [{"params": r["params"], "loss": r["loss"]} for r in rows]
    elif case == "nan_row":
        rows[3]["loss"] = "nan"
    elif case == "nonpositive":
        rows[2]["tokens"] = 0
    elif case == "too_few":
        rows = rows[:5]
    elif case == "one_budget_two_sizes":
        rows = [r for r in rows[:-1] if float(r["flops"]) < 3e17 or int(r["params"]) % 3 == 0]
        extra = ["--approach2", "yes"]
    path = tmp_path / "runs.csv" if case == "missing_file" else write_csv(tmp_path / "r.csv",
                                                                          rows)
    code = main(["fit", "--input", str(path), "--output", str(tmp_path / "out"), "--bootstrap",
                 "0", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxlm: error:") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "not a UTF-8 text CSV file"),
    ("params,tokens,loss\n1e6,2e7,3.5\nname,caf\xe9,x\n".encode("cp1252"), "byte 0xe9"),
], ids=["binary", "cp1252"])
def test_cli_binary_or_not_utf8_csv_exit_2_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "runs.csv"
    path.write_bytes(content)
    code = main(["fit", "--input", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxlm: error:") and err.count("\n") == 1, err
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists()


def test_cli_accepts_a_csv_with_a_byte_order_mark(tmp_path, capsys):
    rows = [{k: r[k] for k in ("params", "tokens", "flops", "loss", "status")}
            for r in runs_rows(families=("t",))]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + pathlib.Path(write_csv(path, rows)).read_bytes())
    out = tmp_path / "fit"
    assert main(["fit", "--input", str(path), "--output", str(out), "--bootstrap", "0"]) == 0, \
        capsys.readouterr().err
    assert json.loads((out / "fit.json").read_text())["families"]["all"]["n_points"] == 20


# ------------------------------------------------------------------ the CLI's outputs


def test_cli_writes_fit_json_report_and_plots(tmp_path, capsys):
    rows = runs_rows()
    for r in rows:  # the lstm trained with another tokenizer: an unfair comparison
        r.update(corpus="stdlib", seq_len=64, flops_rule="counter",
                 tokenizer="byte" if r["family"] == "transformer" else "hf:/tok")
    path = write_csv(tmp_path / "runs.csv", rows)
    out = tmp_path / "fit"
    assert main(["fit", "--input", path, "--output", str(out), "--bootstrap", "20",
                 "--predict", "1e21"]) == 0
    for name in ("fit.json", "report.md", "loss_vs_compute.png", "law_vs_data.png",
                 "holdout.png", "isoflop_transformer.png", "isoflop_lstm.png"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "fit.json").read_text())
    assert set(doc["families"]) == {"transformer", "lstm"}
    fam = doc["families"]["transformer"]
    assert fam["n_points"] == 20  # the failed row is ignored
    for key in ("E", "A", "B", "alpha", "beta"):
        assert len(fam["approach3"][key]["interval"]) == 2
    assert len(fam["approach3"]["residuals_log_loss"]) == 20
    assert {"L(N)", "L(D)", "L(C)", "approach2", "holdout"} <= set(fam)
    assert 1e21 in fam["predictions"]["approach3"]["C"]
    report = (out / "report.md").read_text()
    assert "Families compared" in report and "frontier exponent" in report
    stdout = capsys.readouterr().out
    assert "Approach 3" in stdout
    # the families compared: differences against the first, with intervals, in fit.json and
    # in words; the mismatched tokenizer is a warning
    comp = doc["comparison"]
    assert comp["reference"] == "transformer" and comp["families"] == ["transformer", "lstm"]
    assert [d["quantity"] for d in comp["differences"]] == [
        "frontier_gap", "alpha_C", "frontier_gap.approach3", "approach3.a", "approach2.a",
        "N_opt_ratio.approach3", "N_opt_ratio.approach2"]
    gap = comp["differences"][0]
    assert gap["family"] == "lstm" and len(gap["estimate"]["interval"]) == 2
    assert gap["C"] == pytest.approx(1.05e19)
    unfair = [d for d in doc["diagnostics"] if d["code"] == "conditions_differ"]
    assert [(d["family"], d["what"], d["severity"]) for d in unfair] == [
        ("comparison", "families.tokenizer", "warning")]
    assert "### Differences against transformer" in report
    assert "- The lstm frontier is " in report and "families.tokenizer" in report
    assert "The lstm frontier is " in stdout


@pytest.mark.parametrize("second", ["tokens", "flops"])
def test_cli_accepts_minimal_published_style_csv(tmp_path, second):
    rng = np.random.default_rng(8)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.003, budgets=np.geomspace(1e17, 1e19, 3),
                              per_budget=5)
    rows = [{"params": N[i], second: (D if second == "tokens" else C)[i], "loss": L[i]}
            for i in range(N.size)]
    out = tmp_path / "fit"
    assert main(["fit", "--input", write_csv(tmp_path / "p.csv", rows), "--output", str(out),
                 "--bootstrap", "0", "--holdout", "0"]) == 0
    doc = json.loads((out / "fit.json").read_text())
    a3 = doc["families"]["all"]["approach3"]
    assert a3["alpha"]["value"] == pytest.approx(k["al"], abs=0.03)
    assert (out / "report.md").exists() and (out / "isoflop.png").exists()


# ------------------------------------------------------------------ diagnostics, --strict


def test_cli_strict_on_the_old_demo_sweep_exits_4_with_one_line_per_diagnostic(tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(["fit", "--input", str(DEMO_CSV), "--output", str(out), "--bootstrap", "20",
                 "--strict"])
    cap = capsys.readouterr()
    assert code == EXIT_FLAGGED == 4, cap.err
    doc = json.loads((out / "fit.json").read_text())
    assert list(doc) == ["source", "interval_level", "bootstrap_resamples", "settings",
                         "diagnostics", "families", "comparison"]
    lines = cap.err.splitlines()
    assert len(lines) == len(doc["diagnostics"]) > 0
    assert all(ln.startswith(("jaxlm: warning: ", "jaxlm: info: ")) for ln in lines), lines
    codes = {(d["family"], d["code"]) for d in doc["diagnostics"]}
    for fam in ("transformer", "lstm"):
        assert {(fam, c) for c in ("not_bracketed", "approach2_refused", "at_bound",
                                   "negative_exponent", "a_disagree")} <= codes
        assert "a" not in doc["families"][fam]["approach2"]  # not fitted: no exponent
        assert "approach2" not in doc["families"][fam]["predictions"]
    assert ("jaxlm: warning: transformer: approach2.budget C=2.35e+12: the IsoFLOP minimum at "
            "C=2.35e+12 is not bracketed by the sampled sizes (25,472 to 396,800): the "
            "parabola's minimum N=11,167 lies below the smallest size sampled (25,472); left out "
            "of Approach 2") in lines
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.split("\n## ")[1].startswith("Diagnostics\n")
    assert "warning(s)" in cap.out and (out / "isoflop_lstm.png").stat().st_size > 0
    # without --strict: the same diagnostics written, exit 0, nothing on stderr
    assert main(["fit", "--input", str(DEMO_CSV), "--output", str(tmp_path / "lax"),
                 "--bootstrap", "0"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_strict_exits_0_on_a_clean_synthetic_sweep(tmp_path, capsys):
    path = write_csv(tmp_path / "runs.csv", runs_rows(seed=3))
    out = tmp_path / "fit"
    code = main(["fit", "--input", path, "--output", str(out), "--bootstrap", "40", "--strict"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    # notes only: on an IsoFLOP grid the best loss per size (L(N)) or token budget (L(D)) is no
    # law of N or D alone, and may leave its E or alpha unidentified
    assert all(ln.startswith("jaxlm: info: ") for ln in cap.err.splitlines()), cap.err
    assert "0 warning(s)" in cap.out or "warning(s)" not in cap.out
    diags = json.loads((out / "fit.json").read_text())["diagnostics"]
    assert [d for d in diags if d["severity"] == "warning"] == []
    assert len(diags) == len(cap.err.splitlines())
