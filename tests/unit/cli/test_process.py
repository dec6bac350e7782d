"""jaxlm.cli.process: what a command does to its own process — JAX's persistent compilation
cache (on for the commands that compile, in jaxlm's cache folder, per kind of CPU) and glibc's
malloc kept from returning XLA:CPU's per-execution buffers to the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, TINY, jaxlm_cmd

_PROBE = ("import json, jax; from jaxlm.cli.process import compilation_cache; p = compilation_cache(); "
          "print(json.dumps([str(p) if p else None, jax.config.jax_compilation_cache_dir]))")


def _probe(env: dict) -> list:
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXLM_COMPILATION_CACHE")}
    return {**env, "XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu", **extra}


def test_cache_goes_to_jaxlms_cache_folder_per_kind_of_cpu(tmp_path):
    from jaxlm import paths

    path, jax_dir = _probe(_env(tmp_path))
    want = tmp_path / "cache" / "jaxlm" / "xla" / paths.host_tag()
    assert path == jax_dir == str(want) and want.is_dir()


def test_users_own_cache_and_off_switch_are_respected(tmp_path):
    mine = str(tmp_path / "mine")
    assert _probe(_env(tmp_path, JAX_COMPILATION_CACHE_DIR=mine)) == [None, mine]
    assert _probe(_env(tmp_path, JAXLM_COMPILATION_CACHE="0")) == [None, None]
    assert not (tmp_path / "cache").exists()


def test_a_train_command_fills_the_cache_and_library_use_does_not(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.run(jaxlm_cmd("train", "--workdir", str(tmp_path / "run"), "--quiet", *TINY,
                                    "train.steps=2", "train.checkpoint_every=0", "train.samples=0"),
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = [p.name for p in (tmp_path / "cache" / "jaxlm" / "xla").rglob("*-cache")]
    assert any(name.startswith("jit_train_fn-") for name in entries), entries
    # `import jaxlm` and the library leave JAX's config as they found it
    out = subprocess.run([sys.executable, "-c", "import jax, jaxlm, jaxlm.train.loop; "
                          "print(jax.config.jax_compilation_cache_dir)"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "None", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# malloc: XLA:CPU's per-execution buffers reused, not page-faulted in again every step

# One jitted function whose temporary buffer (x @ w1: 8192 x 2048 float32, 64 MiB) is larger
# than anything glibc keeps in a heap by default; minor page faults counted per call after the
# warm-up, in a process as a jaxlm command starts it (no test XLA_FLAGS).
_FAULTS = """
import json, resource, sys
from jaxlm.cli.process import keep_freed_memory
applied = keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w1, w2: (x @ w1) @ w2)
x, w1, w2 = jnp.ones((8192, 64)), jnp.ones((64, 2048)), jnp.ones((2048, 8))
for _ in range(4):
    f(x, w1, w2).block_until_ready()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w1, w2).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps([applied, sorted(faults)[len(faults) // 2]]))
"""


def _faults(**extra) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("JAXLM_MALLOC_TUNING", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", **extra)
    out = subprocess.run([sys.executable, "-c", _FAULTS], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_buffers_are_reused_not_faulted_in_again():
    applied, tuned = _faults()
    off, untuned = _faults(JAXLM_MALLOC_TUNING="0")
    assert applied is True and off is False
    # the median call: untuned, it maps its 64 MiB afresh (16k page faults); kept, it reuses
    # the heap (0 measured; the heap may still grow on a few calls, as calls overlap)
    assert untuned > 8000, untuned
    assert tuned * 10 < untuned, (tuned, untuned)


def test_malloc_is_left_alone_off_cpu_after_jax_started_and_when_asked(monkeypatch):
    from jaxlm import xla_flags
    from jaxlm.cli import process

    calls = []
    monkeypatch.setattr(process, "_glibc_mallopt", lambda: lambda p, v: calls.append((p, v)) or 1)
    monkeypatch.setattr(xla_flags, "backends_started", lambda: False)
    assert process.keep_freed_memory({"JAX_PLATFORMS": "cpu"}) is True
    assert calls == list(process.MALLOPT_SETTINGS)
    calls.clear()
    assert process.keep_freed_memory({"JAX_PLATFORMS": "cpu", "JAXLM_MALLOC_TUNING": "0"}) is False
    assert process.keep_freed_memory({"JAX_PLATFORMS": "cuda"}) is False
    monkeypatch.setattr(process, "_glibc_mallopt", lambda: None)  # macOS, musl
    assert process.keep_freed_memory({"JAX_PLATFORMS": "cpu"}) is False
    monkeypatch.setattr(xla_flags, "backends_started", lambda: True)
    monkeypatch.setattr(process, "_glibc_mallopt", lambda: lambda p, v: calls.append((p, v)) or 1)
    assert process.keep_freed_memory({"JAX_PLATFORMS": "cpu"}) is False
    assert calls == []


def test_a_jaxlm_command_keeps_freed_memory(monkeypatch):
    from jaxlm import cli
    from jaxlm.cli import process

    called = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: called.append(True) or True)
    assert cli.main(["train", "--print-config"]) == 0
    assert called == [True]
