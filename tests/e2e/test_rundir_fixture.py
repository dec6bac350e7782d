"""A run directory written by jaxlm before the issue-14 restructuring (tests/fixtures/run_v0:
helpers.TINY, 3 steps, checkpoint at step 3, made with jax 0.10.2) must still resume,
load and generate with the current code."""

from __future__ import annotations

import json
import shutil

from helpers import FIXTURES

FIXTURE = FIXTURES / "run_v0"


def test_old_run_directory_resumes_and_generates(tmp_path):
    from jaxlm.config import load_config
    from jaxlm.generate import generate
    from jaxlm.interop import load_run
    from jaxlm.models import build_model
    from jaxlm.train.loop import train
    from helpers import TINY

    workdir = tmp_path / "run"
    shutil.copytree(FIXTURE, workdir)
    before = (workdir / "metrics.jsonl").read_text().splitlines()

    run = load_run(workdir)
    ids = run.tokenizer.encode("def ")
    out = generate(build_model(run.config.model), run.params, list(ids), max_new_tokens=4,
                   temperature=0.0)
    assert len(out.new_tokens[0]) == 4

    result = train(load_config(None, [*TINY, "train.steps=5"]), workdir, quiet=True)
    assert result.final_step == 5
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert lines[:len(before)] == before, "the old metrics must be kept as written"
    steps = [json.loads(x).get("step") for x in lines[len(before):]]
    assert 3 not in steps and 4 in steps and steps[-1] == 5, steps  # resumed after step 3
    history = [json.loads(x) for x in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert [(r["step"], r["key"], r["old"], r["new"]) for r in history] == [
        (3, "train.steps", 3, 5)]  # what the steps before the resume used is kept
