"""jaxlm.cli.process: what a command does to its own process — here, JAX's persistent
compilation cache (on for the commands that compile, in jaxlm's cache folder, per kind of CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
