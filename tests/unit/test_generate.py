"""Generation (jaxlm.generate): KV-cache / carried-state decoding is exact, batching is
transparent, sampling filters do what they say, masked-LM models are refused."""

from __future__ import annotations

import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.generate import (
    TextGenerator, decode_step, filter_top_k, filter_top_p, generate, init_cache, sample_logits,
)
from jaxlm.models import build_model

VOCAB = 259
GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)
MODERN = dataclasses.replace(
    GPT2, position="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, tie_embeddings=False,
    use_bias=False,
)
LSTM = ModelConfig(family="lstm", vocab_size=VOCAB, d_model=32, n_layers=2, max_seq_len=48)
CONFIGS = {
    "gpt2": GPT2,
    "gpt2-scan": dataclasses.replace(GPT2, scan_layers=True, remat="full"),
    "modern": MODERN,  # rope + GQA + untied
    "modern-scan": dataclasses.replace(MODERN, scan_layers=True),
    "lstm": LSTM,
}


@functools.lru_cache(maxsize=None)
def _model(cfg: ModelConfig, seed: int = 0):
    """(model, params) of a config, built once per session and shared: both are immutable, and
    the one model object lets `generate`'s compiled loops be reused across tests."""
    model = build_model(cfg)
    params = nn.meta.unbox(
        model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])
    # spread the logits out so that sampling and argmax are not near ties
    params = jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 and x.shape[0] == VOCAB else x, params)
    return model, params


def _tokens(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.asarray(jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB))


def _full(model, params, ids) -> np.ndarray:
    return np.asarray(model.apply({"params": params}, jnp.asarray(ids, jnp.int32)))


# ---------------------------------------------------------------------------------------------
# the decode path of the models


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_decoding_matches_full_forward(name):
    """Prefill 5 tokens, then feed one token at a time: every position's logits equal the full
    causal forward pass."""
    model, params = _model(CONFIGS[name])
    tokens = _tokens(2, 12)
    full = _full(model, params, tokens)
    cache = init_cache(model, 2, 12)
    step = jax.jit(lambda c, t, p: decode_step(model, params, c, t, p))
    pos = np.broadcast_to(np.arange(12), (2, 12))
    logits, cache = step(cache, tokens[:, :5], pos[:, :5])
    got = [np.asarray(logits)]
    for t in range(5, 12):
        logits, cache = step(cache, tokens[:, t:t + 1], pos[:, t:t + 1])
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-5, rtol=0)


def test_training_forward_has_no_cache_and_is_unchanged():
    """decode=False (training/eval) creates no cache and ignores nothing."""
    model, params = _model(GPT2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    assert "cache" not in variables
    tokens = _tokens(2, 10)
    a = _full(model, params, tokens)
    b = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), positions_bt=jnp.asarray(
        np.broadcast_to(np.arange(10), (2, 10)))))
    np.testing.assert_allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# generate(): exactness, batching, determinism


@pytest.mark.parametrize("name", list(CONFIGS))
def test_generation_logits_equal_full_forward_for_each_prompt(name):
    """A batch of prompts of different lengths (left-padded together), greedy: the logits each
    new token came from equal a full forward pass over that row's sequence so far, alone."""
    model, params = _model(CONFIGS[name])
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [40]]
    out = generate(model, params, prompts, max_new_tokens=6, temperature=0.0, return_logits=True)
    assert out.logits.shape == (3, 6, VOCAB)
    for row, (prompt, new) in enumerate(zip(prompts, out.new_tokens)):
        assert len(new) == 6 and out.sequences[row] == prompt + new
        full = _full(model, params, [prompt + new])[0]  # (len, vocab)
        want = full[len(prompt) - 1: len(prompt) - 1 + 6]
        np.testing.assert_allclose(out.logits[row], want, atol=1e-5, rtol=0)
        assert new == [int(x) for x in want.argmax(-1)]  # greedy


@pytest.mark.parametrize("name", ["gpt2", "gpt2-scan", "modern", "modern-scan"])
def test_batch_one_reads_the_transposed_residual_kernels(name):
    """A single prompt's one-token steps read attention's `out` and the MLP's `down` kernels
    from their transposed copies (layers.DECODE_KERNELS, on CPU): the logits still equal a full
    forward pass, the copies are the kernels transposed (a leading layers axis kept under
    scan_layers), and zeroed copies change every step after the prefill."""
    from jaxlm import generate as generate_lib

    model, params = _model(CONFIGS[name])
    prompt = [5, 6, 7, 8, 9]
    out = generate(model, params, prompt, max_new_tokens=6, temperature=0.0, return_logits=True)
    full = _full(model, params, [prompt + out.new_tokens[0]])[0]
    np.testing.assert_allclose(out.logits[0], full[4:10], atol=1e-5, rtol=0)

    kernels = generate_lib._decode_kernels(params)
    layers = ["h"] if "h" in params else [f"h_{i}" for i in range(CONFIGS[name].n_layers)]
    assert sorted(kernels) == sorted(layers)
    for layer in layers:
        down = params[layer]["mlp"]["down"]["kernel"]
        attn_out = params[layer]["attn"]["out"]["kernel"]
        lead = down.shape[:-2]  # (layers,) under scan_layers
        np.testing.assert_array_equal(kernels[layer]["mlp"]["down"], np.swapaxes(down, -1, -2))
        np.testing.assert_array_equal(
            kernels[layer]["attn"]["out"],
            np.swapaxes(np.reshape(attn_out, lead + (-1, attn_out.shape[-1])), -1, -2))

    args = (model, params, jnp.asarray([[0] * 11 + prompt], jnp.int32),
            jnp.asarray([11], jnp.int32), jax.random.PRNGKey(0), jnp.float32(1), jnp.float32(1),
            jnp.float32(1))
    kw = dict(max_new_tokens=6, top_k=0, greedy=True, use_top_p=False, eos_id=None, pad_id=0,
              return_logits=True, use_penalty=False)
    _, _, right = generate_lib._generate(*args, **kw, kernels=kernels)
    _, _, zeroed = generate_lib._generate(*args, **kw,
                                         kernels=jax.tree.map(jnp.zeros_like, kernels))
    np.testing.assert_allclose(right[0], out.logits[0], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(zeroed[0, 0], right[0, 0])  # the prefill's logits
    assert all(np.abs(zeroed[0, i] - right[0, i]).max() > 1e-3 for i in range(1, 6))


@pytest.mark.parametrize("name", ["gpt2", "modern", "lstm"])
def test_batched_prompts_equal_each_prompt_alone(name):
    model, params = _model(CONFIGS[name])
    prompts = [[5, 6, 7, 8], [100, 101], [7] * 17]
    kw = dict(max_new_tokens=5, temperature=0.0, return_logits=True)
    batch = generate(model, params, prompts, **kw)
    for i, p in enumerate(prompts):
        alone = generate(model, params, p, **kw)
        assert alone.new_tokens[0] == batch.new_tokens[i]
        np.testing.assert_allclose(alone.logits[0], batch.logits[i], atol=1e-5, rtol=0)


def test_greedy_is_deterministic_and_ignores_seed():
    model, params = _model(GPT2)
    a = generate(model, params, [5, 6, 7], max_new_tokens=8, temperature=0.0, seed=0)
    b = generate(model, params, [5, 6, 7], max_new_tokens=8, temperature=0.0, seed=123)
    assert a.new_tokens == b.new_tokens


@pytest.mark.parametrize("name", ["gpt2", "lstm"])
def test_same_seed_same_samples(name):
    model, params = _model(CONFIGS[name])
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=50, top_p=0.9, num_return_sequences=4)
    a = generate(model, params, [5, 6, 7], seed=7, **kw)
    b = generate(model, params, [5, 6, 7], seed=7, **kw)
    c = generate(model, params, [5, 6, 7], seed=8, **kw)
    assert len(a.new_tokens) == 4 and all(len(t) == 10 for t in a.new_tokens)
    assert a.new_tokens == b.new_tokens
    assert a.new_tokens != c.new_tokens
    assert len({tuple(t) for t in a.new_tokens}) > 1  # the 4 samples differ


def test_num_return_sequences_is_prompt_major():
    model, params = _model(GPT2)
    out = generate(model, params, [[5, 6], [7, 8, 9]], max_new_tokens=3, num_return_sequences=3,
                   temperature=0.0)
    assert len(out.sequences) == 6
    assert all(s[:2] == [5, 6] for s in out.sequences[:3])
    assert all(s[:3] == [7, 8, 9] for s in out.sequences[3:])
    assert out.new_tokens[0] == out.new_tokens[1] == out.new_tokens[2]  # greedy


def test_eos_stops_a_row_and_the_loop():
    model, params = _model(GPT2)
    kw = dict(max_new_tokens=8, temperature=1.0, seed=5)
    ref = generate(model, params, [[5, 6, 7], [20, 21]], **kw).new_tokens
    k = next(i for i in range(1, 8) if ref[0][i] not in ref[0][:i])
    eos = ref[0][k]  # row 0's k-th sampled token becomes the EOS
    out = generate(model, params, [[5, 6, 7], [20, 21]], eos_id=eos, **kw)
    assert out.new_tokens[0] == ref[0][:k] and out.finished[0]
    assert out.sequences[0] == [5, 6, 7] + ref[0][:k]
    if eos in ref[1]:
        assert out.new_tokens[1] == ref[1][: ref[1].index(eos)] and out.finished[1]
    else:
        assert out.new_tokens[1] == ref[1] and not out.finished[1]


def test_max_length_counts_the_prompt():
    model, params = _model(GPT2)
    out = generate(model, params, [5, 6, 7], max_length=10, temperature=0.0)
    assert len(out.sequences[0]) == 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=100), "max_seq_len"),
    (dict(max_new_tokens=None, max_length=2), "max_length"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(num_return_sequences=0), "num_return_sequences"),
])
def test_bad_arguments(kwargs, match):
    model, params = _model(GPT2)
    with pytest.raises(JaxlmError, match=match):
        generate(model, params, [5, 6, 7], **{"max_new_tokens": 4, **kwargs})


def test_bad_prompts():
    model, params = _model(GPT2)
    with pytest.raises(JaxlmError, match="empty"):
        generate(model, params, [[]], max_new_tokens=2)
    with pytest.raises(JaxlmError, match="vocabulary"):
        generate(model, params, [5, VOCAB], max_new_tokens=2)
    with pytest.raises(JaxlmError, match="token ids"):
        generate(model, params, "hello", max_new_tokens=2)


def test_lstm_has_no_context_limit():
    model, params = _model(LSTM)
    out = generate(model, params, [5, 6], max_new_tokens=60, temperature=0.0)
    assert len(out.new_tokens[0]) == 60


# ---------------------------------------------------------------------------------------------
# sampling filters


def test_top_k_keeps_exactly_the_k_best():
    logits = jax.random.normal(jax.random.PRNGKey(0), (4, 50))
    f = np.asarray(filter_top_k(logits, 5))
    for row, frow in zip(np.asarray(logits), f):
        kept = set(np.flatnonzero(np.isfinite(frow)))
        assert kept == set(np.argsort(-row)[:5])
    np.testing.assert_array_equal(np.asarray(filter_top_k(logits, 0)), np.asarray(logits))
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    draws = np.asarray(jax.vmap(lambda k: sample_logits(k, logits, 1.0, top_k=3))(keys))
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    for b in range(4):
        assert set(draws[:, b]) <= set(top3[b])


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.9, 0.02, 0.02, 0.01]])
    logits = jnp.log(jnp.asarray(probs))
    for p, want in [(0.5, [{0}, {1}]), (0.6, [{0, 1}, {1}]), (0.8, [{0, 1, 2}, {1}]),
                    (0.93, [{0, 1, 2, 3}, {0, 1}]), (1.0, [set(range(5)), set(range(5))])]:
        f = np.asarray(filter_top_p(logits, p))
        for b in range(2):
            assert set(np.flatnonzero(np.isfinite(f[b]))) == want[b], (p, b)
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    draws = np.asarray(jax.vmap(lambda k: sample_logits(k, logits, 1.0, top_p=0.6))(keys))
    assert set(draws[:, 0]) == {0, 1} and set(draws[:, 1]) == {1}


def test_temperature_sharpens():
    logits = jnp.asarray([[2.0, 1.0, 0.0, -1.0]])
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    cold = np.asarray(jax.vmap(lambda k: sample_logits(k, logits, 0.1))(keys))
    hot = np.asarray(jax.vmap(lambda k: sample_logits(k, logits, 5.0))(keys))
    assert (cold == 0).mean() > 0.99
    assert len(set(hot.ravel())) == 4


def test_generated_tokens_respect_top_k():
    model, params = _model(GPT2)
    out = generate(model, params, [5, 6, 7], max_new_tokens=8, temperature=1.5, top_k=2,
                   num_return_sequences=8, return_logits=True, seed=3)
    for new, logits in zip(out.new_tokens, out.logits):
        for tok, row in zip(new, logits):
            assert tok in set(np.argsort(-row)[:2])


# ---------------------------------------------------------------------------------------------
# the text front end and the CLI on a trained run directory


def test_text_generator_with_byte_tokenizer():
    from jaxlm.data.tokenizers import ByteTokenizer

    model, params = _model(GPT2)
    gen = TextGenerator(GPT2, params, ByteTokenizer())
    texts = gen("ab", max_new_tokens=5, temperature=0.0)
    assert len(texts) == 1 and texts[0]["generated_text"].startswith("ab")
    grouped = gen(["x", ""], max_new_tokens=4, num_return_sequences=2, seed=1)
    assert len(grouped) == 2 and all(len(g) == 2 for g in grouped)
    assert all(set(r) == {"generated_text"} for g in grouped for r in g)


ENC = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                  objective="mlm")


def test_generation_refuses_mlm():
    from jaxlm.generate import generate

    model = build_model(ENC)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    with pytest.raises(JaxlmError, match="masked-LM"):
        generate(model, params, [5, 6], max_new_tokens=2)


def test_decode_loop_reads_the_tied_embedding_in_place():
    """The compiled one-token loop computes tied logits without a transposed copy of the
    embedding (x @ E.T made XLA's CPU matrix-vector path copy E, vocab x d_model, every token:
    2 x 154 MB per token on GPT-2 small)."""
    from jaxlm import generate as generate_lib

    model, params = _model(GPT2)
    one = jnp.zeros((1,), jnp.int32)
    hlo = generate_lib._generate.lower(
        model, params, jnp.zeros((1, 4), jnp.int32), one, jax.random.PRNGKey(0),
        jnp.float32(1), jnp.float32(1), jnp.float32(1), max_new_tokens=4, top_k=0, greedy=True,
        use_top_p=False, eos_id=None, pad_id=0, return_logits=False, use_penalty=False,
        kernels=generate_lib._decode_kernels(params),  # as `generate` runs batch 1
    ).compile().as_text()
    embedding = f"f32[{GPT2.d_model},{VOCAB}]"
    copies = [line for line in hlo.splitlines()
              if embedding in line and (" transpose(" in line or " copy(" in line)]
    assert not copies, copies


@pytest.mark.parametrize("b", [1, 3])
def test_decode_loop_reads_the_kv_cache_in_place(b):
    """No layer's KV cache is copied or transposed in the compiled program: with a
    sequence-major cache, XLA:CPU transposed every layer's whole cache on every token (25 of 61
    ms per token on GPT-2 small at batch 8); with a (1, k, S, h) cache at batch 1 it ran the
    cache update twice and copied every cache four times per token (3 of 24 ms)."""
    from jaxlm import generate as generate_lib

    model, params = _model(GPT2)
    p, n = 16, 4
    s = p + n - 1  # the cache's length
    hlo = generate_lib._generate.lower(
        model, params, jnp.zeros((b, p), jnp.int32), jnp.zeros((b,), jnp.int32),
        jax.random.PRNGKey(0), jnp.float32(1), jnp.float32(1), jnp.float32(1),
        max_new_tokens=n, top_k=0, greedy=True, use_top_p=False, eos_id=None, pad_id=0,
        return_logits=False, use_penalty=False,
        kernels=generate_lib._decode_kernels(params) if b == 1 else None,  # as `generate` runs
    ).compile().as_text()
    k, h = GPT2.n_heads, GPT2.d_model // GPT2.n_heads
    assert len({b * k, s, h}) == 3  # distinct, so that a permuted shape is recognisable
    assert f"f32[{b * k},{s},{h}]" in hlo  # the cache, (b * k, S, h)
    moved = [line.strip()[:160] for line in hlo.splitlines()
             if (m := re.search(r"= f32\[([\d,]+)\]\S* (copy|transpose)\(", line))
             and np.prod([int(x) for x in m.group(1).split(",")]) == b * k * s * h]
    assert not moved, moved
