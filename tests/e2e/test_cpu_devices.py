"""jaxlm's CPU default for training: one JAX device per core, data-parallel (jaxlm.xla_flags).
The same run on 2 such devices and on JAX's single CPU device gives the same losses."""

from __future__ import annotations

import subprocess

import numpy as np

from helpers import TINY, _cmd, _env, _fail_msg, _records, losses, run

OVERRIDES = ["train.steps=4", "train.batch_size=4", "train.grad_accum=2", "train.samples=0",
             "train.eval_every=0", "train.checkpoint_every=0"]


def test_two_cpu_devices_train_like_one(tmp_path):
    env = {**_env(), "JAXLM_CPU_DEVICES": "2"}  # what `auto` gives a 2-core machine
    env.pop("XLA_FLAGS", None)
    two = tmp_path / "two"
    proc = subprocess.run(_cmd("--workdir", str(two), *TINY, *OVERRIDES), env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, _fail_msg(proc)
    start = next(r for r in _records(two) if r.get("event") == "start")
    # 2 microbatches of 2 rows: one row per device
    assert start["devices"].startswith("2x") and start["mesh"]["data"] == 2, start
    assert "2 single-threaded CPU devices at once" in start["peak_flops_source"]
    one = tmp_path / "one"
    run(one, *OVERRIDES, base=TINY)  # in-process: one CPU device (tests/conftest.py)
    a, b = losses(two), losses(one)
    assert sorted(a) == sorted(b) and len(a) >= 2
    np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=1e-5)
