"""jaxlm.models.attention: the splash kernel against XLA attention in the Pallas
interpreter, and the fallbacks on CPU."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm.config import ModelConfig
from jaxlm.models import attention, build_model

GPT = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)


def _params(m: ModelConfig, t: int):
    model = build_model(m)
    x = jnp.zeros((2, t), jnp.int32)
    return model, nn.meta.unbox(model.init(jax.random.key(0), x)["params"])


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


@pytest.mark.parametrize("t,n,kv_heads", [(1, 4, 4), (1, 4, 2), (5, 4, 1), (5, 6, 3)])
def test_cached_attention_matches_xla_over_a_sequence_major_cache(t, n, kv_heads):
    """The decode kernel over a head-major cache (b * k, S, h) equals jax.nn's XLA attention over
    the same keys sequence-major, with a causal, left-padding mask and grouped-query heads; rows
    whose mask is empty (queries in the padding) come out finite."""
    b, s, h = 3, 11, 8
    q, _, _ = _qkv(b, t, n, kv_heads, h)
    _, k, v = _qkv(b, s, n, kv_heads, h, seed=1)
    index = 4  # the t queries sit at cache slots [index, index + t)
    pad_b = np.array([0, 2, 7])  # left padding per row: its queries' positions go below 0
    positions_bt = index + np.arange(t)[None, :] - pad_b[:, None]
    offset_ts = np.arange(s)[None, :] - (index + np.arange(t))[:, None]
    mask_bts = (offset_ts <= 0) & (offset_ts >= -positions_bt[:, :, None])
    def head_major(x_bskh):
        return x_bskh.transpose(0, 2, 1, 3).reshape(b * kv_heads, s, h)

    got = attention.cached_attention(q, head_major(k), head_major(v), jnp.asarray(mask_bts))
    want = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask_bts)[:, None],
                                        implementation="xla")
    assert got.shape == (b, t, n, h)
    seen = mask_bts.any(-1)  # (b, t): the query sees at least one key
    assert not seen.all()  # the padding case is exercised
    np.testing.assert_allclose(np.asarray(got)[seen], np.asarray(want)[seen], rtol=1e-5,
                               atol=1e-5)
    assert np.isfinite(np.asarray(got)).all()


def test_attention_resolution_on_cpu_falls_back_loudly():
    shapes = dict(platform="cpu", dtype="float32", n_heads=4, n_kv_heads=4, head_dim=16,
                  seq_len=64)
    assert attention.resolve("auto", **shapes) == ("xla", None)  # one block: nothing to skip
    assert attention.resolve("auto", **{**shapes, "seq_len": 256}) == ("blockwise", None)
    assert attention.resolve("auto", **{**shapes, "seq_len": 128}) == ("blockwise", None)  # 2 x 64
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


def test_attention_resolution_with_a_context_axis():
    """Sequence shards run XLA attention (models.context_attention); asking for a kernel says so."""
    shapes = dict(platform="tpu", dtype="bfloat16", n_heads=4, n_kv_heads=4, head_dim=16,
                  seq_len=256, context=2)
    assert attention.resolve("auto", **shapes) == ("xla", None)
    assert attention.resolve("auto", **{**shapes, "platform": "cpu"}) == ("xla", None)
    for impl in ("splash", "cudnn", "blockwise"):
        got, warning = attention.resolve(impl, **shapes)
        assert got == "xla" and f"attention_impl={impl}" in warning and "mesh.context=2" in warning


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


def test_block_attention_takes_larger_blocks_for_long_sequences(monkeypatch):
    """64-token blocks up to 1023 tokens, 128 from 1024 on (the block size the layer passes)."""
    assert [attention.block_size(t) for t in (128, 256, 512, 1023, 1024, 4096)] == [
        64, 64, 64, 64, 128, 128]
    from jaxlm.models import layers

    seen = []
    real = layers.block_causal_attention

    def spy(q, k, v, *, block_size):
        seen.append((q.shape[1], block_size))
        return real(q, k, v, block_size=block_size)

    monkeypatch.setattr(layers, "block_causal_attention", spy)
    for t in (256, 1024):
        cfg = dataclasses.replace(GPT, max_seq_len=t, n_layers=1, attention_impl="blockwise")
        model = build_model(cfg)
        x = jnp.zeros((1, t), jnp.int32)
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    assert seen == [(256, 64), (1024, 128)]


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
