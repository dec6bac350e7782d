"""`jaxlm generate` on a trained run directory."""

from __future__ import annotations

import pytest

from jaxlm.generate import TextGenerator

from helpers import jaxlm_cmd, run_all


# tiny_run: a finished 3-step run of the tiny GPT (conftest.py)


@pytest.mark.slow
def test_cli_generate(tiny_run):
    args = ["generate", "--workdir", str(tiny_run), "--prompt", "def ", "--max-new-tokens", "6",
            "--num-return-sequences", "2", "--temperature", "0.9", "--top-k", "20",
            "--top-p", "0.9", "--seed", "3"]
    a, b = run_all([jaxlm_cmd(*args)] * 2)  # two separate processes
    assert a.returncode == 0, a.stderr
    assert a.stdout.count("def ") >= 2 and "sample 2" in a.stdout
    assert a.stdout == b.stdout  # same seed, same samples
    # the same through Python
    gen = TextGenerator.from_workdir(str(tiny_run))
    assert len(gen("def ", max_new_tokens=4, num_return_sequences=3)) == 3


@pytest.mark.slow
def test_cli_generate_errors(tiny_run, tmp_path):
    cases = [
        (["--workdir", str(tmp_path / "nope")], "does not exist"),
        (["--workdir", str(tmp_path)], "config.yaml"),
        (["--workdir", str(tiny_run), "--max-new-tokens", "0"], "max-new-tokens"),
        (["--workdir", str(tiny_run), "--top-p", "1.5"], "top-p"),
        (["--workdir", str(tiny_run), "--max-new-tokens", "1000"], "max_seq_len"),
    ]
    procs = run_all([jaxlm_cmd("generate", "--prompt", "x", *extra) for extra, _ in cases])
    for (extra, match), proc in zip(cases, procs):
        assert proc.returncode != 0, extra
        assert "Traceback" not in proc.stderr, proc.stderr
        assert match in proc.stderr, (extra, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
