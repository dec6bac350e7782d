"""Reading a sweep's eval curves for Approach 1 (the I/O edge of jaxlm.scaling.curves).

For each run the fit uses (report.read_runs: status ok, not a trunk, the best of its (N, D)),
DIR/runs/NAME's config.yaml gives the schedule, train.steps, tokens per step and the model for
jaxlm.flops, and its metrics.jsonl the evals; jaxlm.scaling.curves decides which count.
"""

from __future__ import annotations

import pathlib
from typing import Callable

from jaxlm.errors import JaxlmError
from jaxlm.scaling import curves as K
from jaxlm.scaling.results import RUNS_DIR


def run_curve(run_dir: pathlib.Path, params: float, overshoot: float = K.OVERSHOOT):
    """(schedule, train.steps, EvalCurve, final eval batches) of one run directory; JaxlmError
    (one line) when it has no readable config."""
    from jaxlm import flops, rundir
    from jaxlm.train.metrics import load_metrics

    cfg = rundir.read_config(run_dir)
    records = load_metrics(run_dir)
    seq = cfg.data.seq_len
    c = K.eval_points(records, flops.flops_per_token(cfg.model, int(params), seq),
                      cfg.train.batch_size * seq, cfg.optim.schedule, cfg.train.steps, overshoot)
    return cfg.optim.schedule, cfg.train.steps, c, K.final_eval_batches(records)


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
                schedule, steps, c, final = run_curve(run_dir, n, overshoot)
            except JaxlmError as e:
                warn(f"jaxlm: warning: no eval curve from {run_dir}: {e}")
                continue
            items.append((name, float(n), schedule, steps, c, final))
        d["curves"] = K.gather(items, overshoot)
        total, read = total + d["curves"].n_points, read + len(items)
    return total, read


__all__ = ["run_curve", "attach"]
