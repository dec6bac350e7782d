"""Shared fixtures for the jaxlm test suite. Everything runs on CPU with tiny models, offline."""

from __future__ import annotations

import os

# Before anything imports JAX: CPU only, no accelerator probing, quiet TF/absl logs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
# Tiny models: XLA's backend optimizations cost far more compile time than they save.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# What a jaxlm command adds to XLA_FLAGS before JAX starts (GPU flags, ignored on CPU), added
# once for the session: JAX's compilation-cache key hashes XLA_FLAGS, and without this the
# in-process runs (JAX already started: nothing added) and the `python train.py` runs, Ray workers
# and notebooks (flags added) compiled the same step under two keys, never sharing an entry.
from jaxlm import xla_flags  # noqa: E402 (no JAX: `import jaxlm` leaves the environment alone)
# One CPU device, as JAX has it, for the suite and the processes it starts: the tests size their
# batches freely, and tests/e2e/test_cpu_devices.py checks jaxlm's one-device-per-core default.
os.environ.setdefault(xla_flags.CPU_DEVICES_ENV, "1")

xla_flags.apply_defaults()
# The same tiny models are compiled over and over, in-process and by every `python train.py` the
# tests start: one persistent compilation cache for the session (inherited by those processes)
# turns the repeats into loads. Fresh per session, removed at its end (pytest_unconfigure).
_OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_XLA_CACHE:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxlm-tests-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import pathlib  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE:
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    from helpers import REPO_ROOT  # tests/helpers.py (imports jaxlm: not at conftest import time

    return REPO_ROOT


def synthetic_text(n_lines: int = 600, seed: int = 0) -> list[str]:
    """Lines of pseudo-words (plus some non-ASCII words): enough distinct pieces to train a
    SentencePiece model of a few hundred pieces, fully deterministic."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "du", "fo", "gi", "ha",
                 "je", "pu", "qui", "ro", "st", "tr", "ch", "sh", "th", "ing", "er", "on"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    vocab += ["café", "naïve", "données", "日本語", "テキスト", "größe", "🎉", "def", "return"]
    lines = []
    for i in range(n_lines):
        words = [rng.choice(vocab) for _ in range(rng.randint(3, 12))]
        line = " ".join(words)
        if i % 7 == 0:
            line = "\t" + line
        if i % 11 == 0:
            line += "   " + rng.choice(vocab)
        lines.append(line)
    return lines


@pytest.fixture(scope="session")
def synthetic_docs() -> list[str]:
    """20 documents of 30 lines each."""
    lines = synthetic_text()
    return ["\n".join(lines[i:i + 30]) + "\n" for i in range(0, len(lines), 30)]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
    """A finished 3-step run of the tiny GPT (helpers.TINY, train.steps=3): checkpoint
    at step 3, samples, tokenizer. Trained once, in-process, for every module that needs a
    finished run; read-only: copy it before changing anything."""
    from jaxlm.config import load_config
    from jaxlm.train.loop import train
    from helpers import TINY

    workdir = tmp_path_factory.mktemp("tiny") / "run"
    result = train(load_config(None, [*TINY, "train.steps=3"]), workdir, quiet=True)
    assert result.final_step == 3
    return workdir


# tests/multidevice needs 8 host devices, fixed before JAX starts: tests/e2e/test_sharding.py runs it
# in its own process. Collect it here only when the device count is already set up for it.
if "xla_force_host_platform_device_count=8" not in os.environ.get("XLA_FLAGS", ""):
    collect_ignore = ["multidevice"]
