"""jaxlm.flops: the FLOP counter against XLA's own count and by hand, the peak table and MFU."""

from __future__ import annotations

import dataclasses

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
    assert source == "measured float32 matmul roof"
    assert 1e8 < peak < 1e14  # a CPU: between 0.1 GFLOP/s and 100 TFLOP/s
    peak, source = flops.system_peak(devices, "float32", override=2e12)
    assert (peak, source) == (2e12 * len(devices), "train.peak_flops")
