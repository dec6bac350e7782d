"""jaxlm.flops: the FLOP counter against XLA's own count and by hand, the peak table and MFU."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxlm import flops
from jaxlm.config import ModelConfig
from jaxlm.models import build_model

VOCAB = 259  # the byte tokenizer's
GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
LSTM = ModelConfig(family="lstm", vocab_size=VOCAB, d_model=32, n_layers=2, max_seq_len=32)


def test_flops_per_token():
    n = 1000
    assert flops.flops_per_token(GPT2, n, 16) == 6 * n + 6 * GPT2.n_layers * 16 * GPT2.d_model
    assert flops.flops_per_token(LSTM, n, 16) == 6 * n


GPT = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)


def _params(m: ModelConfig, t: int):
    model = build_model(m)
    x = jnp.zeros((2, t), jnp.int32)
    return model, nn.meta.unbox(model.init(jax.random.key(0), x)["params"])


# ---------------------------------------------------------------------------------------------
# the FLOP counter


def test_model_flops_match_xla_cost_analysis():
    """PaLM's count (matmuls only) vs XLA's count of the whole compiled forward+backward: XLA adds
    the elementwise work (norms, softmax, GELU), a few percent, and nothing may be missing."""
    b, t = 4, 128
    model, params = _params(GPT, t)
    x = jnp.zeros((b, t), jnp.int32)

    def loss(p):
        return jax.nn.log_softmax(model.apply({"params": p}, x)).mean()

    cost = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_per_token = cost["flops"] / (b * t)
    _, non_embed = flops.param_counts(params)
    ours = flops.model_flops_per_token(GPT, non_embed, t)
    assert ours <= xla_per_token <= 1.10 * ours, (ours, xla_per_token)


def test_flop_conventions_by_hand():
    _, params = _params(GPT, 16)
    total, non_embed = flops.param_counts(params)
    d, L, V, T = 64, 2, 512, 128
    per_layer = 4 * d * d + 4 * d + 2 * 4 * d * d + 4 * d + d + 4 * d  # attn, mlp, 2 norms
    assert non_embed == L * per_layer + 2 * d  # + final norm
    assert total == non_embed + V * d + 128 * d  # tied embedding + learned positions
    assert flops.flops_per_token(GPT, non_embed, T) == 6 * non_embed + 6 * L * T * d
    assert flops.model_flops_per_token(GPT, non_embed, T) == 6 * (non_embed + d * V) + 12 * L * T * d
    lstm = ModelConfig(family="lstm", vocab_size=V, d_model=d, n_layers=L)
    assert flops.model_flops_per_token(lstm, 1000, T) == 6 * (1000 + d * V)
    classify = dataclasses.replace(GPT, objective="classify", causal=None)
    assert flops.model_flops_per_token(classify, non_embed, T) == 6 * non_embed + 12 * L * T * d


def test_peak_table_and_mfu():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 495e12
    assert flops.peak_flops("NVIDIA H100 NVL") == 989e12  # by prefix
    assert flops.peak_flops("TPU v5 lite") == 197e12
    assert flops.peak_flops("TPU v4", "float16") == 275e12
    assert flops.peak_flops("cpu") is None
    for kind in ("TPU v4", "TPU v5e", "TPU v5p", "TPU v6e", "NVIDIA A100-SXM4-80GB", "NVIDIA H200"):
        assert flops.peak_flops(kind) > 1e14
    assert flops.mfu(1000.0, 1e9, 4e12) == pytest.approx(0.25)


def test_system_peak_cpu_roof_and_override():
    devices = jax.devices()
    peak, source = flops.system_peak(devices, "float32")
    assert source.startswith("measured float32 matmul roof of this machine")
    assert 1e8 < peak < 1e14  # a CPU: between 0.1 GFLOP/s and 100 TFLOP/s
    peak, source = flops.system_peak(devices, "float32", override=2e12)
    assert (peak, source) == (2e12 * len(devices), "train.peak_flops")


# ---------------------------------------------------------------------------------------------
# the CPU roof: measured once per machine and cached (issue 21.17)


@pytest.fixture
def roof_cache(tmp_path, monkeypatch):
    """An empty cache directory, a fake measurement that counts its calls."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(flops.REMEASURE_ENV, raising=False)
    calls = []

    def fake(n=1024, repeats=5):
        calls.append(n)
        return 1.5e11 + len(calls)

    monkeypatch.setattr(flops, "matmul_roof", fake)
    monkeypatch.setattr(flops, "_machine_busy_seconds", lambda: None)  # load: not measured
    flops.machine_roof.cache_clear()
    yield calls
    flops.machine_roof.cache_clear()


def test_roof_is_measured_once_per_machine_and_cached(roof_cache):
    first = flops.machine_roof()
    assert not first.cached and roof_cache == [1024]
    path = flops.roof_cache_path()
    assert path.parent.name == "jaxlm" and path.is_file()
    flops.machine_roof.cache_clear()  # a new process
    again = flops.machine_roof()
    assert again.cached and again.flops == first.flops and again.measured == first.measured
    assert roof_cache == [1024]  # not measured again
    peak, source = flops.system_peak(jax.devices(), "float32")
    assert peak == first.flops and first.measured in source


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"x": 1}', "\x00\xff"])
def test_a_damaged_roof_cache_is_measured_again(roof_cache, content):
    path = flops.roof_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert not flops.machine_roof().cached and roof_cache == [1024]
    flops.machine_roof.cache_clear()
    assert flops.machine_roof().cached  # rewritten whole


def test_a_damaged_roof_entry_is_measured_again(roof_cache):
    flops.machine_roof()
    path = flops.roof_cache_path()
    entries = json.loads(path.read_text())
    entries[next(iter(entries))]["flops"] = "fast"
    path.write_text(json.dumps(entries))
    flops.machine_roof.cache_clear()
    assert not flops.machine_roof().cached and len(roof_cache) == 2


def test_remeasure_env_and_unwritable_cache(roof_cache, monkeypatch, tmp_path):
    flops.machine_roof()
    flops.machine_roof.cache_clear()
    monkeypatch.setenv(flops.REMEASURE_ENV, "1")
    remeasured = flops.machine_roof()
    assert not remeasured.cached and len(roof_cache) == 2
    monkeypatch.delenv(flops.REMEASURE_ENV)
    flops.machine_roof.cache_clear()
    assert flops.machine_roof().flops == remeasured.flops  # the new value replaced the old
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cannot hold a directory
    flops.machine_roof.cache_clear()
    assert not flops.machine_roof().cached  # measured, used, not cached: no error
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_roof_measured_on_a_busy_machine_is_not_cached(roof_cache, monkeypatch):
    """Other processes kept a core busy: the roof is low; this process uses it, says so, and
    the next start measures again (a cached low roof made every later CPU MFU exceed 100%)."""
    import itertools
    import time

    clock = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))  # 1 s per reading
    busy = iter([100.0, 101.0])  # the machine: 1 busy CPU-s in that second, none of it ours
    monkeypatch.setattr(flops, "_machine_busy_seconds", lambda: next(busy))
    roof = flops.machine_roof()
    assert roof.others_busy == pytest.approx(1.0, abs=0.05) and not flops.roof_cache_path().exists()
    peak, source = flops.system_peak(jax.devices(), "float32")
    assert peak == roof.flops and "not cached" in source
    flops.machine_roof.cache_clear()
    monkeypatch.setattr(flops, "_machine_busy_seconds", lambda: None)
    assert not flops.machine_roof().cached and roof_cache == [1024, 1024]  # measured again
