"""Shared by the scaling tests (fit, records, the sweep, their CLI commands): synthetic scaling
laws and IsoFLOP grids, tiny sweep specs and runs.csv rows. No JAX."""

from __future__ import annotations

import csv

import numpy as np
import yaml


def law3(N, D, E, A, B, al, be):
    return E + A / N ** al + B / D ** be


def random_constants(rng):
    return dict(E=rng.uniform(1.5, 2.5), A=rng.uniform(200, 800), B=rng.uniform(500, 3000),
                al=rng.uniform(0.28, 0.4), be=rng.uniform(0.28, 0.4))


def n_opt_true(k, C):
    """The compute-optimal N of law3 with constants k at budget C (C = 6 N D)."""
    lG = (np.log(k["al"] * k["A"] / (k["be"] * k["B"]))) / (k["al"] + k["be"])
    return np.exp(lG + k["be"] / (k["al"] + k["be"]) * np.log(np.asarray(C) / 6))


def isoflop_grid(rng, k, noise, budgets=np.geomspace(1e17, 1e20, 5), per_budget=9, shift=None):
    """IsoFLOP runs around each budget's optimum (+-1.2 decades of N, moved by shift[j] decades
    at budget j: past +-1.2 the optimum is no longer bracketed), multiplicative noise."""
    N, D = [], []
    shift = np.zeros(len(budgets)) if shift is None else shift
    for C, s in zip(budgets, shift):
        n = n_opt_true(k, C) * 10.0 ** s * np.geomspace(10 ** -1.2, 10 ** 1.2, per_budget)
        N.append(n), D.append(C / (6 * n))
    N, D = np.concatenate(N), np.concatenate(D)
    L = law3(N, D, **k) * np.exp(rng.normal(0, noise, N.size))
    return N, D, 6 * N * D, L


SWEEP_TINY = {  # a few steps of a tiny model per member
    "data.seq_len": 16, "model.max_seq_len": 16, "train.log_every": 2, "train.eval_every": 0,
    "train.final_eval_batches": 1, "train.checkpoint_every": 0, "train.samples": 0,
    "data.shuffle_window": 0,
}


def write_spec(tmp_path, name="spec.yaml", **spec):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_spec(tmp_path, **changes):
    spec = {"base_overrides": dict(SWEEP_TINY),
            "families": {"transformer": {"head_dim": 8, "sizes": [{"n_layers": 1, "d_model": 16}]},
                         "lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}},
            "tokens": [256], "batch_size": {"value": 2}, "warmup_fraction": 0.2}
    spec.update(changes)
    return write_spec(tmp_path, **spec)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows) -> str:
    """rows (dicts with the same keys) as a CSV file with a header; its path."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)
