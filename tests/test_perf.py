"""Performance plumbing: the FLOP counter against XLA's own count, the peak table and MFU, the
attention kernels (splash in the Pallas interpreter, the fallbacks on CPU), device prefetch
and the default XLA flags. (Speed itself is measured in benchmarks/, not asserted here.)"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm import flops, xla_flags
from jaxlm.config import ModelConfig
from jaxlm.data.prefetch import DevicePrefetcher
from jaxlm.models import attention, build_model

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


# ---------------------------------------------------------------------------------------------
# attention kernels


def _qkv(b, t, n, k, h, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(keys[0], (b, t, n, h)), jax.random.normal(keys[1], (b, t, k, h)),
            jax.random.normal(keys[2], (b, t, k, h)))


@pytest.mark.parametrize("causal,kv_heads", [(True, 4), (False, 4), (True, 2)])
def test_splash_matches_xla_in_interpreter(causal, kv_heads):
    """The TPU kernel's math, run by the Pallas interpreter on CPU: outputs and gradients."""
    q, k, v = _qkv(2, 128, 4, kv_heads, 32)

    def splash(q, k, v):
        return attention.splash_attention(q, k, v, causal=causal, interpret=True)

    def xla(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")

    np.testing.assert_allclose(splash(q, k, v), xla(q, k, v), atol=2e-5)
    grads = [jax.grad(lambda *a: (f(*a) ** 2).sum(), argnums=(0, 1, 2))(q, k, v)
             for f in (splash, xla)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_attention_resolution_on_cpu_falls_back_loudly():
    shapes = dict(platform="cpu", dtype="float32", n_heads=4, n_kv_heads=4, head_dim=16,
                  seq_len=64)
    assert attention.resolve("auto", **shapes) == ("xla", None)  # one block: nothing to skip
    assert attention.resolve("auto", **{**shapes, "seq_len": 256}) == ("blockwise", None)
    assert attention.resolve("auto", **{**shapes, "seq_len": 256, "causal": False}) == ("xla", None)
    assert attention.resolve("xla", **{**shapes, "seq_len": 256}) == ("xla", None)
    impl, warning = attention.resolve("blockwise", **{**shapes, "causal": False})
    assert impl == "xla" and "blockwise is for causal attention" in warning
    impl, warning = attention.resolve("cudnn", **shapes)
    assert impl == "xla" and "attention_impl=cudnn needs a GPU" in warning
    impl, warning = attention.resolve("splash", **shapes)
    assert impl == "xla" and "attention_impl=splash needs a TPU" in warning
    # on a GPU, float32 compute rules cuDNN flash attention out before anything is compiled
    impl, warning = attention.resolve("auto", **{**shapes, "platform": "gpu"})
    assert impl == "xla" and "bfloat16/float16" in warning and "model.dtype=float32" in warning


@pytest.mark.parametrize("impl", ["blockwise", "splash"])
def test_fast_attention_models_match_xla_in_training(impl):
    """The kernels in a model: same logits and gradients as XLA attention (t = 2 blocks; GQA)."""
    t = 256
    cfg = dataclasses.replace(GPT, max_seq_len=t, n_kv_heads=2, n_layers=1)
    model, params = _params(cfg, t)
    fast = build_model(dataclasses.replace(cfg, attention_impl=impl))
    x = jax.random.randint(jax.random.key(2), (2, t), 0, 512)

    def loss_and_grads(m):
        return jax.jit(jax.value_and_grad(
            lambda p: jax.nn.log_softmax(m.apply({"params": p}, x)).mean()))(params)

    (l_fast, g_fast), (l_ref, g_ref) = loss_and_grads(fast), loss_and_grads(model)
    np.testing.assert_allclose(l_fast, l_ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_attention_resolution_when_the_kernel_does_not_compile():
    """A platform that claims to be a TPU but cannot compile the kernel (this CPU): XLA, and the
    warning names the shapes and the compiler's reason."""
    impl, warning = attention.resolve("splash", platform="tpu", dtype="float32", n_heads=4,
                                      n_kv_heads=4, head_dim=16, seq_len=64)
    assert impl == "xla"
    assert "does not compile for heads=4, head_dim=16, seq_len=64" in warning


def test_config_accepts_the_implementations():
    for impl in attention.IMPLEMENTATIONS:
        config_lib.load_config(None, [f"model.attention_impl={impl}"])
    with pytest.raises(config_lib.JaxlmError, match="model.attention_impl"):
        config_lib.load_config(None, ["model.attention_impl=flash"])


# ---------------------------------------------------------------------------------------------
# device prefetch


class _Counter:
    """A checkpointable iterator over 0, 1, 2, ..."""

    def __init__(self):
        self.i = 0

    def __next__(self):
        self.i += 1
        return self.i - 1

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetcher_state_is_the_next_batch_returned(size):
    puts = []
    it = _Counter()
    pf = DevicePrefetcher(it, lambda x: puts.append(x) or x * 10, size)
    assert [next(pf) for _ in range(5)] == [0, 10, 20, 30, 40]
    assert it.i == 5 + size  # the wrapped iterator runs `size` ahead ...
    assert len(puts) == 5 + size  # ... and those batches were already put on the devices
    state = pf.get_state()
    assert state == {"i": 5}  # ... but the checkpointed position is the next one trained on
    fresh = DevicePrefetcher(_Counter(), lambda x: x * 10, size)
    fresh.set_state(state)
    assert [next(fresh) for _ in range(3)] == [50, 60, 70]
    pf.set_state({"i": 1})
    assert next(pf) == 10


def test_train_logs_mfu_and_prefetch_keeps_the_data_order(tmp_path, synthetic_docs):
    from jaxlm.train.loop import train
    from jaxlm.train.metrics import load_metrics

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(synthetic_docs):
        (corpus / f"{i}.txt").write_text(doc)
    base = [f"data.corpus={corpus}", "data.seq_len=32", "model.d_model=32", "model.n_layers=1",
            "model.n_heads=2", "model.max_seq_len=32", "train.batch_size=4", "train.steps=4",
            "train.log_every=1", "optim.warmup_steps=1", "train.eval_every=0",
            "train.final_eval_batches=1", "train.samples=0", "train.checkpoint_every=0"]
    losses = {}
    for prefetch in (0, 2):
        cfg = config_lib.load_config(None, base + [f"train.prefetch={prefetch}"])
        seen = []
        train(cfg, tmp_path / f"p{prefetch}", quiet=True, on_log=seen.append)
        records = load_metrics(tmp_path / f"p{prefetch}")
        # on_log got exactly the step records and the final one, as written
        assert [r["step"] for r in seen] == [r["step"] for r in records if "step" in r
                                              and r.get("event") in (None, "final")]
        assert seen[-1]["event"] == "final" and seen[0]["loss"] == records[2]["loss"]
        steps = [r for r in records if "step" in r and "event" not in r]
        losses[prefetch] = [r["loss"] for r in steps]
        start = records[0]
        assert start["event"] == "start" and start["attention"] == "xla"
        assert start["peak_flops_source"] == "measured float32 matmul roof"
        assert start["model_flops_per_token"] > start["flops_per_token"] > 0
        assert any(r.get("event") == "compiled" and r["compile_time_sec"] > 0 for r in records)
        for r in steps[1:]:
            assert r["step_time_sec"] > 0 and r["tokens_per_sec"] > 0
            assert r["mfu"] == pytest.approx(
                r["tokens_per_sec"] * start["model_flops_per_token"] / start["peak_flops"])
            assert 0 < r["mfu"] < 1
        tags = _tensorboard_tags(tmp_path / f"p{prefetch}" / "tensorboard")
        assert {"train/loss", "train/learning_rate", "perf/tokens_per_sec", "perf/mfu",
                "perf/step_time_sec", "perf/compile_time_sec", "eval/loss", "eval/bpb"} <= tags
    assert losses[0] == losses[2]


def _tensorboard_tags(logdir) -> set[str]:
    """Scalar tags in the TFRecord event files (length, crc, event proto, crc per record)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in logdir.glob("events.out.tfevents*"):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
    return tags


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


# ---------------------------------------------------------------------------------------------
# settings that are valid but probably a mistake


def test_config_warnings():
    cfg = config_lib.load_config(None, ["train.steps=100", "train.eval_every=300",
                                        "model.dtype=bfloat16", "data.seq_len=32"])
    text = "\n".join(config_lib.config_warnings(cfg, "cpu"))
    assert "model.dtype=bfloat16 on CPU" in text
    assert "data.seq_len=32 uses under a quarter of model.max_seq_len=256" in text
    gpu = config_lib.config_warnings(config_lib.load_config(None, ["model.dtype=float32"]), "gpu")
    assert gpu == ["model.dtype=float32 on GPU: bfloat16 compute (float32 params stay) is usually "
                   "2-4x faster; set model.dtype=bfloat16"]
    for platform in ("cpu", "gpu", "tpu"):  # the default (auto) is right everywhere
        assert config_lib.config_warnings(config_lib.load_config(None, []), platform) == []


def test_auto_compute_dtype():
    assert config_lib.compute_dtype("auto", "gpu") == "bfloat16"
    assert config_lib.compute_dtype("auto", "tpu") == "bfloat16"
    assert config_lib.compute_dtype("auto", "cpu") == "float32"
    assert config_lib.compute_dtype("float16", "tpu") == "float16"
    assert config_lib.load_config(None, []).model.dtype == "auto"
    from jaxlm.models.layers import dtype_of

    assert dtype_of("auto") == jnp.float32  # this CPU
