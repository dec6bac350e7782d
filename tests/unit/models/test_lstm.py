"""jaxlm.models.lstm: parameter layout and the torch.nn.LSTM recurrence."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import flops
from jaxlm.config import ModelConfig
from jaxlm.models import build_model

VOCAB = 259  # the byte tokenizer's
LSTM = ModelConfig(family="lstm", vocab_size=VOCAB, d_model=32, n_layers=2, max_seq_len=32)


def _tokens(b: int, t: int, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB, dtype=jnp.int32)


def _init(cfg: ModelConfig, t: int = 8):
    model = build_model(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, t), jnp.int32))
    return model, variables


def test_lstm_layout():
    cfg = dataclasses.replace(LSTM, tie_embeddings=False)
    _, variables = _init(cfg, 8)
    params = nn.meta.unbox(variables["params"])
    layer = params["lstm_0"]
    assert layer["w_ih"].shape == (32, 128) and layer["w_hh"].shape == (32, 128)
    assert layer["b_ih"].shape == (128,) and layer["b_hh"].shape == (128,)
    assert "head" in params
    total, non_embed = flops.param_counts(params)
    head = sum(x.size for x in jax.tree.leaves(params["head"]))
    assert total - non_embed == params["embed"]["embedding"].size + head


def test_lstm_embed_dim_layout_and_default():
    """model.embed_dim sets the embedding width (layer 0's input) only; unset, the parameters
    are exactly those of before (same shapes, same values), so golden numbers do not move."""
    wide = dataclasses.replace(LSTM, tie_embeddings=False, embed_dim=20)
    variables = jax.eval_shape(build_model(wide).init, jax.random.PRNGKey(0),
                               jnp.zeros((2, 1), jnp.int32))
    params = nn.meta.unbox(variables["params"])
    assert params["embed"]["embedding"].shape == (VOCAB, 20)
    assert params["lstm_0"]["w_ih"].shape == (20, 128)
    assert params["lstm_1"]["w_ih"].shape == (32, 128)
    assert params["head"]["kernel"].shape == (32, VOCAB)
    default = nn.meta.unbox(_init(LSTM, 1)[1]["params"])
    same = nn.meta.unbox(_init(dataclasses.replace(LSTM, embed_dim=32), 1)[1]["params"])
    jax.tree.map(np.testing.assert_array_equal, default, same)
    axes = nn.get_partition_spec(variables)["params"]
    assert axes["embed"]["embedding"] == jax.sharding.PartitionSpec("vocab", "vocab_embed")
    assert axes["lstm_0"]["w_ih"] == jax.sharding.PartitionSpec("vocab_embed", "gates")
    assert axes["lstm_1"]["w_ih"] == jax.sharding.PartitionSpec("embed", "gates")


def test_lstm_layer_matches_reference():
    """The layer computes the torch.nn.LSTM recurrence (gate order i, f, g, o)."""
    from jaxlm.models.lstm import LSTMLayer

    b, t, d, h = 2, 5, 3, 4
    layer = LSTMLayer(h, jnp.float32, jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (b, t, d))
    variables = layer.init(jax.random.PRNGKey(2), x)
    p = {k: np.asarray(v, np.float64) for k, v in nn.meta.unbox(variables["params"]).items()}
    out, (c_last, h_last) = layer.apply(variables, x)

    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    hs, cs = np.zeros((b, h)), np.zeros((b, h))
    ref = []
    for s in range(t):
        g = np.asarray(x[:, s], np.float64) @ p["w_ih"] + p["b_ih"] + hs @ p["w_hh"] + p["b_hh"]
        i, f, gg, o = np.split(g, 4, axis=-1)
        cs = sig(f) * cs + sig(i) * np.tanh(gg)
        hs = sig(o) * np.tanh(cs)
        ref.append(hs)
    np.testing.assert_allclose(np.asarray(out), np.stack(ref, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h_last), hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c_last), cs, rtol=1e-5, atol=1e-6)
    bound = 1 / np.sqrt(h)
    assert all(np.abs(v).max() <= bound for v in p.values())  # U(-1/sqrt(h), 1/sqrt(h))
