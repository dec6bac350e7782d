"""What the planner reads or measures (effects at the edge of jaxlm.scaling.planner): a prior
law from an earlier sweep's fit.json or explicit constants, seed noise from an earlier sweep's
replicate seeds, and the wall-time calibration, from an earlier sweep's runs.csv or by training
two members of the planned grid for a few steps."""

from __future__ import annotations

import csv
import json
import pathlib
import statistics
from typing import Optional, Sequence

import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm import config as config_lib, xla_flags
from jaxlm.scaling.plan import Member
from jaxlm.scaling.planner import CHINCHILLA, PriorLaw
from jaxlm.scaling.walltime import ALL, Calibration, fit_calibration
from jaxlm.scaling.spec import SweepSpec, dotlist

CONSTANTS = ("E", "A", "B", "alpha", "beta")


def parse_law(text: str) -> PriorLaw:
    """--law E,A,B,alpha,beta (five numbers)."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 5:
        raise JaxlmError(f"--law {text!r}: give five numbers E,A,B,alpha,beta")
    return PriorLaw(*vals, source=f"--law {text}")


def load_prior(arg: Optional[str], families: Sequence[str]) -> dict[str, PriorLaw]:
    """Per family: 'chinchilla' (or None), or the Approach 3 constants of a fit.json from an
    earlier sweep (its family of the same name; the only family when it has one)."""
    if arg in (None, "chinchilla"):
        return {f: CHINCHILLA for f in families}
    try:
        fit = json.loads(pathlib.Path(arg).read_text())
        fams = fit["families"]
    except FileNotFoundError:
        raise JaxlmError(f"--prior {arg}: no such file (give 'chinchilla' or a fit.json)")
    except (OSError, ValueError, KeyError, TypeError):
        raise JaxlmError(f"--prior {arg}: not a jaxlm fit.json (no 'families')")
    out = {}
    for f in families:
        name = f if f in fams else (next(iter(fams)) if len(fams) == 1 else None)
        if name is None:
            raise JaxlmError(f"--prior {arg}: has no fit of family {f} (it has "
                             f"{', '.join(fams)})")
        try:
            a3 = fams[name]["approach3"]
            vals = [float(a3[k]["value"]) for k in CONSTANTS]
        except (KeyError, TypeError, ValueError):
            raise JaxlmError(f"--prior {arg}: family {name} has no Approach 3 constants")
        out[f] = PriorLaw(*vals, source=f"{arg} ({name}, Approach 3)")
    return out


def _ok_rows(path: str) -> list[dict]:
    p = pathlib.Path(path)
    if not p.exists():
        raise JaxlmError(f"--runs {path}: no such file or directory")
    try:  # any runs.csv with the columns used (older sweeps' files lack some of today's)
        with open(p / "runs.csv" if p.is_dir() else p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise JaxlmError(f"--runs {path}: cannot read it as a runs.csv ({e})")
    return [r for r in rows if r.get("status", "ok") == "ok"]


def seed_noise(path: str) -> dict[str, float]:
    """Per family: the pooled standard deviation of log loss over replicate seeds (runs of one
    family, size and token count); families without replicates are left out."""
    groups: dict[tuple, list[float]] = {}
    for r in _ok_rows(path):
        try:
            key = (r["family"], int(float(r["params"])), int(float(r["tokens"])))
            groups.setdefault(key, []).append(float(np.log(float(r["loss"]))))
        except (KeyError, ValueError, TypeError):
            continue
    ss: dict[str, list[float]] = {}
    for (fam, *_), v in groups.items():
        if len(v) >= 2:
            ss.setdefault(fam, []).append((statistics.variance(v), len(v) - 1))
    return {f: float(np.sqrt(sum(s * k for s, k in v) / sum(k for _, k in v)))
            for f, v in ss.items()}


def fit_noise(arg: str) -> dict[str, tuple[float, str]]:
    """Per family, (sigma, where from) in a fit.json: its replicate seeds' pooled std of log
    loss (`seed_noise.pooled_rel_std`), else Approach 3's RMSE of log loss (seed noise plus
    misfit: an upper bound on the seed noise)."""
    fit = json.loads(pathlib.Path(arg).read_text())
    out = {}
    for f, v in fit["families"].items():
        sn = (v.get("seed_noise") or {}).get("pooled_rel_std")
        if sn is not None:
            out[f] = (float(sn), f"replicate seeds in {arg}")
        elif (v.get("approach3") or {}).get("rmse_log_loss") is not None:
            out[f] = (float(v["approach3"]["rmse_log_loss"]),
                      f"Approach 3 RMSE in {arg} (an upper bound)")
    return out


def calibration_from_runs(path: str) -> dict[str, Calibration]:
    """wall = fixed + steps * step_s + flops / F fitted to an earlier sweep's runs.csv: per
    family with at least 3 finished runs, and over all runs (walltime.ALL)."""
    pts: dict[str, list[tuple[float, float, float]]] = {}
    for r in _ok_rows(path):
        try:
            p = float(r["steps"]), float(r["flops"]), float(r["wall_time"])
        except (KeyError, ValueError, TypeError):
            continue
        pts.setdefault(r.get("family") or ALL, []).append(p)
    every = [p for v in pts.values() for p in v]
    out = {ALL: fit_calibration(*zip(*every) if every else ([], [], []),
                                source=f"{path}: {len(every)} runs")}
    for fam, v in pts.items():
        if len(v) >= 3 and fam != ALL:
            out[fam] = fit_calibration(*zip(*v), source=f"{path}: {len(v)} {fam} runs")
    return out


def _measure(spec: SweepSpec, m: Member, workdir: str, steps: int) -> tuple[float, float]:
    """(median step time, fixed cost = wall time - steps x step time) of `m` trained from
    scratch for `steps` steps (a branch's trunk is not needed), no eval or checkpoints."""
    from jaxlm.train.loop import train
    from jaxlm.train.metrics import load_metrics

    xla_flags.keep_one_cpu_device()  # timed as the sweep trains it (sweep.member)
    cfg = config_lib.load_config(spec.base_config, [
        *dotlist(spec.base_overrides), *m.overrides, f"train.steps={steps}",
        "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=0",
        "train.samples=0", "train.final_eval_batches=1", "optim.warmup_steps=0"])
    out = train(cfg, pathlib.Path(workdir) / "calibration" / m.name, quiet=True)
    times = [r["step_time_sec"] for r in load_metrics(out.workdir)
             if "step_time_sec" in r and r.get("step", 0) > 1]  # step 1 waits on compile
    if not times:
        raise JaxlmError(f"calibration run {m.name} logged no step times")
    t = float(np.median(times))
    return t, out.wall_time - steps * t


def calibrate_by_training(spec: SweepSpec, members: Sequence[Member], workdir: str,
                          steps: int = 8) -> dict[str, Calibration]:
    """Per family: trains its members with the least and the most FLOPs per step for `steps`
    steps each in WORKDIR/calibration/ and reads their step times (metrics.jsonl): step time
    = step_s + FLOPs per step / F (two members, two unknowns); the fixed cost per run
    (compile, setup, final eval) = wall time - steps x step time, averaged."""
    out = {}
    for fam in dict.fromkeys(m.family for m in members):
        ok = sorted((m for m in members if m.family == fam and m.error is None
                     and m.role != "trunk"), key=lambda m: m.flops / m.steps)
        if len(ok) < 2:
            raise JaxlmError(f"calibration needs two valid {fam} members in the grid")
        (t0, c0), (t1, c1) = (_measure(spec, m, workdir, steps) for m in (ok[0], ok[-1]))
        f0, f1 = (m.flops / m.steps for m in (ok[0], ok[-1]))
        rate = (f1 - f0) / (t1 - t0) if t1 > t0 and f1 > f0 else float("inf")
        out[fam] = Calibration(max((c0 + c1) / 2, 0.0), max(t0 - f0 / rate, 0.0), rate,
                               source=f"trained {ok[0].name} and {ok[-1].name} for {steps} "
                               "steps")
    return out


__all__ = ["parse_law", "load_prior", "seed_noise", "fit_noise", "calibration_from_runs",
           "calibrate_by_training"]
