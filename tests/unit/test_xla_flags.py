"""jaxlm.xla_flags: the default XLA flags."""

from __future__ import annotations

import os
import subprocess
import sys

from jaxlm import xla_flags


# ---------------------------------------------------------------------------------------------
# default XLA flags


def test_xla_defaults_respect_the_user():
    env = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false"}
    added = xla_flags.apply_defaults(env)
    assert "--xla_gpu_enable_latency_hiding_scheduler=false" in env["XLA_FLAGS"]
    assert env["XLA_FLAGS"].count("latency_hiding") == 1
    assert added == ["--xla_gpu_enable_highest_priority_async_stream=true"]
    assert xla_flags.apply_defaults(env) == []  # idempotent
    off = {"JAXLM_XLA_DEFAULTS": "0"}
    assert xla_flags.apply_defaults(off) == [] and "XLA_FLAGS" not in off


def test_xla_default_flags_parse_with_this_jaxlib():
    """XLA aborts the process on a flag it does not know: a flag renamed upstream fails here."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("import os, jaxlm, jax; jax.numpy.ones(1).block_until_ready(); "
            "print(os.environ['XLA_FLAGS'])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, (value, _) in xla_flags.DEFAULT_FLAGS.items():
        assert f"--{name}={value}" in proc.stdout
