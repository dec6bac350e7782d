"""jaxlm.xla_flags: the default XLA flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxlm import xla_flags
from jaxlm.errors import JaxlmError


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
    code = ("import os; from jaxlm import xla_flags; xla_flags.apply_defaults(); import jax; "
            "jax.numpy.ones(1).block_until_ready(); print(os.environ['XLA_FLAGS'])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, (value, _) in xla_flags.DEFAULT_FLAGS.items():
        assert f"--{name}={value}" in proc.stdout


def test_import_jaxlm_leaves_the_environment_alone():
    """`import jaxlm` (and its public names, the CLI module) sets no XLA flag (issue 21.18)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("import os, sys, jaxlm, jaxlm.cli; jaxlm.train, jaxlm.RunConfig; "
            "hook = sys.unraisablehook; import jaxlm.train.loop, jaxlm.checkpoint; "
            "print(os.environ.get('XLA_FLAGS', 'unset'), sys.unraisablehook is hook)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["unset", "True"]


def test_a_jaxlm_command_sets_the_flags(monkeypatch, capsys):
    """`jaxlm train` / `python train.py` (both jaxlm.cli.main) still get the GPU flags."""
    from jaxlm import cli

    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert cli.main(["train", "--print-config"]) == 0
    for name, (value, _) in xla_flags.DEFAULT_FLAGS.items():
        assert f"--{name}={value}" in os.environ["XLA_FLAGS"]


def test_library_train_sets_the_flags_only_before_jax_starts(monkeypatch):
    import jax

    jax.devices()  # started: editing XLA_FLAGS now would do nothing
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_flags.apply_before_backends() == []
    assert "XLA_FLAGS" not in os.environ


def test_backends_started_asks_jax_without_importing_it():
    code = ("import sys; from jaxlm import xla_flags; a = xla_flags.backends_started(); "
            "b = 'jax' in sys.modules; import jax; c = xla_flags.backends_started(); "
            "jax.devices(); print(a, b, c, xla_flags.backends_started())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False", "False", "True"]


# ---------------------------------------------------------------------------------------------
# one CPU device per core for training


def test_cpu_device_split_for_training_only(monkeypatch):
    monkeypatch.setattr(xla_flags, "usable_cores", lambda: 2)
    env = {"JAX_PLATFORMS": "cpu"}
    assert xla_flags.apply_defaults(dict(env)) == [
        f"--{n}={v}" for n, (v, _) in xla_flags.DEFAULT_FLAGS.items()]  # not training: no split
    added = xla_flags.apply_defaults(env, training=True)
    assert added[-2:] == ["--xla_force_host_platform_device_count=2",
                          "--xla_cpu_multi_thread_eigen=false"]
    assert xla_flags.auto_cpu_devices(env) == 2  # the mesh may use fewer (sharding)
    assert env["PJRT_NPROC"] == "2"  # one thread per single-threaded device
    assert xla_flags.apply_defaults(env, training=True) == []  # idempotent
    # more cores than MAX_AUTO_CPU_DEVICES: capped, Eigen's threads stay on, the pool has room
    monkeypatch.setattr(xla_flags, "usable_cores", lambda: 32)
    assert xla_flags.cpu_device_flags({"JAX_PLATFORMS": "cpu"}) == [
        f"--xla_force_host_platform_device_count={xla_flags.MAX_AUTO_CPU_DEVICES}"]
    env = {"JAX_PLATFORMS": "cpu"}
    xla_flags.apply_defaults(env, training=True)
    assert env["PJRT_NPROC"] == str(2 * xla_flags.MAX_AUTO_CPU_DEVICES)


def test_cpu_device_split_respects_the_user_and_accelerators(monkeypatch):
    monkeypatch.setattr(xla_flags, "usable_cores", lambda: 4)
    cpu = {"JAX_PLATFORMS": "cpu"}
    assert xla_flags.cpu_device_flags({**cpu, "JAXLM_CPU_DEVICES": "1"}) == []
    assert xla_flags.cpu_device_flags({**cpu, "JAXLM_CPU_DEVICES": "3"}) == [
        "--xla_force_host_platform_device_count=3"]  # fewer than the cores: threads stay on
    mine = {**cpu, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply_defaults(mine, training=True)[-1].startswith("--xla_gpu")
    assert xla_flags.auto_cpu_devices(mine) == 0
    assert xla_flags.cpu_device_flags({"JAX_PLATFORMS": "cuda"}) == []
    assert xla_flags.cpu_device_flags({"JAX_PLATFORMS": "cpu,tpu"}) == []
    for bad in ("two", "0", "-1"):
        with pytest.raises(JaxlmError, match=f"JAXLM_CPU_DEVICES='{bad}'"):
            xla_flags.cpu_device_flags({**cpu, "JAXLM_CPU_DEVICES": bad})


def test_cpu_device_split_parses_and_takes_effect():
    """The split's flags parse with this jaxlib (XLA aborts on an unknown flag) and give JAX the
    devices."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", JAXLM_CPU_DEVICES="2")
    code = ("from jaxlm import xla_flags; xla_flags.apply_defaults(training=True); import jax; "
            "jax.numpy.ones(1).block_until_ready(); print(jax.device_count())")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2"]


def test_only_a_transformer_run_asks_for_the_split(monkeypatch):
    """jaxlm.train asks for the CPU split for a Transformer, not for an LSTM (its sequential
    steps train 0.69-0.73x as fast on the per-core devices)."""
    from jaxlm.config import load_config
    from jaxlm.train import loop

    asked = []

    def stop(*, training):
        asked.append(training)
        raise KeyboardInterrupt  # nothing past the flags is needed here

    monkeypatch.setattr(loop.xla_flags, "apply_before_backends", stop)
    for family in ("transformer", "lstm"):
        with pytest.raises(KeyboardInterrupt):
            loop.train(load_config(None, [f"model.family={family}"]), "/nonexistent/run")
    assert asked == [True, False]


def test_a_sweep_member_keeps_one_cpu_device(monkeypatch, tmp_path):
    """Sweep members (every launcher runs them through run_member) keep JAX's single CPU device
    unless the user set JAXLM_CPU_DEVICES: one process trains members of every family."""
    from jaxlm.scaling.sweep import member

    monkeypatch.delenv(xla_flags.CPU_DEVICES_ENV, raising=False)

    def no_training(*a, **k):
        raise RuntimeError("not trained here")

    task = member.Task.__new__(member.Task)  # only the fields run_member reads before training
    object.__setattr__(task, "member", None)
    with pytest.raises(Exception):
        member.run_member(task, train_fn=no_training)
    assert os.environ[xla_flags.CPU_DEVICES_ENV] == "1"
    monkeypatch.setenv(xla_flags.CPU_DEVICES_ENV, "2")
    with pytest.raises(Exception):
        member.run_member(task, train_fn=no_training)
    assert os.environ[xla_flags.CPU_DEVICES_ENV] == "2"  # the user's choice stands
