"""Reading a sweep's eval curves for Approach 1 (the I/O edge of jaxlm.scaling.curves).

For each run the fit uses (report.read_runs: status ok, not a trunk, the best of its (N, D)),
DIR/runs/NAME's config.yaml (jaxlm.rundir.saved_config) gives the schedule, train.steps, tokens
per step and the model for jaxlm.flops, and its metrics.jsonl the evals;
jaxlm.scaling.curves decides which count.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from jaxlm.errors import JaxlmError
from jaxlm.scaling import curves as K
from jaxlm.scaling.results import RUNS_DIR


def run_curve(run_dir: pathlib.Path, params: float, overshoot: float = K.OVERSHOOT,
              warn: Callable[[str], None] = print):
    """(schedule, train.steps, EvalCurve, final eval batches) of one run directory; JaxlmError
    (one line) when it has no usable config. The saved config is read as data, not validated
    again (a RunConfig per run costs most of a second: a sweep has hundreds)."""
    from jaxlm import config as config_lib
    from jaxlm import flops, rundir
    from jaxlm.train.metrics import load_metrics

    saved = rundir.saved_config(run_dir, log=warn)
    try:
        fields = {f.name for f in dataclasses.fields(config_lib.ModelConfig)}
        model = config_lib.ModelConfig(**{k: v for k, v in saved["model"].items()
                                          if k in fields})
        schedule, steps = str(saved["optim"]["schedule"]), int(saved["train"]["steps"])
        seq, batch = int(saved["data"]["seq_len"]), int(saved["train"]["batch_size"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise JaxlmError(f"{run_dir / rundir.CONFIG_FILE}: not a run config "
                         f"({type(e).__name__}: {e})") from None
    records = load_metrics(run_dir)
    c = K.eval_points(records, flops.flops_per_token(model, int(params), seq), batch * seq,
                      schedule, steps, overshoot)
    return schedule, steps, c, K.final_eval_batches(records)


def attach(sweep_dir, data: dict, overshoot: float = K.OVERSHOOT,
           warn: Callable[[str], None] = print) -> tuple[int, int]:
    """data[fam]["curves"] (a curves.Curves) for each family of report.read_runs, from the run
    directories under sweep_dir/runs; returns (curve points, runs read). A run without a run
    directory or metrics.jsonl gives none; one whose config is unreadable gives none and a
    `warn` line."""
    from jaxlm.rundir import METRICS_FILE

    total = read = 0
    for d in data.values():
        items = []
        for name, n in zip(d["names"], d["N"]):
            run_dir = pathlib.Path(sweep_dir) / RUNS_DIR / name
            if not (run_dir / METRICS_FILE).is_file():
                continue
            try:
                schedule, steps, c, final = run_curve(run_dir, n, overshoot, warn)
            except JaxlmError as e:
                warn(f"jaxlm: warning: no eval curve from {run_dir}: {e}")
                continue
            items.append((name, float(n), schedule, steps, c, final))
        d["curves"] = K.gather(items, overshoot)
        total, read = total + d["curves"].n_points, read + len(items)
    return total, read


__all__ = ["run_curve", "attach"]
