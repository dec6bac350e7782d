"""Models for objectives beyond next-token LM: the bidirectional MLM encoder and the
classification heads (pooling, padding)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import ModelConfig
from jaxlm.models import build_model

VOCAB = 259
ENC = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                  objective="mlm")


def _tokens(b, t, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB, dtype=jnp.int32)


@pytest.mark.parametrize("scan", [False, True])
def test_encoder_is_not_causal(scan):
    """d logits[:, t] / d embeddings[:, s] is nonzero for every s, later positions included."""
    cfg = ModelConfig(**{**ENC.__dict__, "scan_layers": scan, "remat": "full" if scan else "none"})
    model = build_model(cfg)
    T = 8
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, T), jnp.int32))
    params = nn.meta.unbox(variables["params"])
    zeros = jax.tree.map(jnp.zeros_like, variables["perturbations"])
    tokens = _tokens(2, T)

    def logit_sum(pert, t):
        logits = model.apply({"params": params, "perturbations": pert}, tokens)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False).sum()

    (g,) = jax.tree.leaves(jax.jit(jax.vmap(lambda t: jax.grad(logit_sum)(zeros, t)))(
        jnp.arange(T)))
    g = np.abs(np.asarray(g)).sum(-1)  # (T, b, T)
    assert np.all(g > 0), "an encoder output ignores some position (later ones included)"


# ---------------------------------------------------------------------------------------------
# classification: heads, pooling, padding, metrics, data


@pytest.mark.parametrize("pooling,causal", [("last", True), ("first", False), ("mean", False)])
def test_classifier_ignores_padding(pooling, causal):
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                      objective="classify", num_labels=3, pooling=pooling, causal=causal)
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]
    tokens = _tokens(2, 16)
    valid = jnp.arange(16)[None, :] < jnp.array([[10], [16]])
    logits = model.apply({"params": params}, tokens, valid_bt=valid)
    assert logits.shape == (2, 3)
    other_pad = jnp.where(valid, tokens, 0 if pooling == "mean" else 77)
    logits2 = model.apply({"params": params}, other_pad, valid_bt=valid)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(logits2), atol=1e-5)
    short = model.apply({"params": params}, tokens[:1, :10])  # the same row, unpadded
    np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(short[0]), atol=1e-5)
