"""The prepared GPU suite (benchmarks/gpu_suite.py) stays runnable between the sessions that
are lent a GPU: every configuration it would train is a valid jaxlm config, on the GPU plan and
on the dry run's, and its report still renders the results recorded on the H200. (The dry run
itself, ~3 min, is run by hand: benchmarks/README.md.)"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO_ROOT

BENCH = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_train  # noqa: E402
import gpu_report  # noqa: E402
import gpu_suite  # noqa: E402


@pytest.mark.parametrize("dry", [False, True])
def test_every_planned_configuration_is_a_valid_config(dry):
    from jaxlm import config as config_lib

    steps = gpu_suite.plan(dry)
    labels = [label for label, *_ in steps]
    assert len(labels) == len(set(labels))
    parts = {part for _, part, _, _ in steps}
    assert parts <= set(__import__("gpu_parts").PARTS) | {"train"}
    trains = [spec for _, part, spec, _ in steps if part == "train"]
    assert len(trains) == len(gpu_suite.SIZES) + 4  # the sizes and the leave-one-out
    for spec in trains:
        cfg = config_lib.load_config(None, bench_train.config_overrides(spec))
        assert cfg.model.scan_layers == spec["scan_layers"] and cfg.model.remat == spec["remat"]
    assert all(0 < limit <= 200 for *_, limit in steps)


def test_report_renders_the_recorded_h200_runs():
    run2 = json.loads((BENCH / "gpu_results" / "2026-11-30-h200-run2.json").read_text())
    text = gpu_report.markdown(run2["parts"], dry=False)
    assert "| train 1.3b | 1,315.8M | 2048 | 16 | cudnn | full | yes | 9.5 | 611.9 | 53,553 | " \
           "49.2% | 70.7% | 28.6 |" in text
    run1 = json.loads((BENCH / "gpu_results" / "2026-11-30-h200-run1.json").read_text())
    text = gpu_report.markdown(run1["parts"], dry=False)
    assert "Attention `auto` resolves to **cudnn**" in text
    assert "| train 1.3b | - | 2048 | 16 |" in text and "RESOURCE_EXHAUSTED" in text
    assert "| 1 | 128 | 1,373 | 130 | 10.53x |" in text  # decode, batch 1
