"""jaxlm.train.step, masked LM: BERT corruption statistics and the loss over selected
positions only."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import ModelConfig
from jaxlm.models import build_model
from jaxlm.train.step import MlmSpec, loss_and_grads, mlm_corrupt, token_nats

VOCAB = 259
ENC = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                  objective="mlm")
SPEC = MlmSpec(mask_id=2, random_low=3, random_high=VOCAB, prob=0.15)


def _tokens(b, t, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB, dtype=jnp.int32)


# ---------------------------------------------------------------------------------------------
# masked LM: corruption, loss, bidirectionality


def test_corruption_statistics():
    tokens = _tokens(256, 512)
    valid = jnp.arange(512)[None, :] < 480  # the tail is padding: never selected
    valid = jnp.broadcast_to(valid, tokens.shape)
    out = jax.jit(lambda r: mlm_corrupt(r, tokens, valid, SPEC))(jax.random.PRNGKey(1))
    inp, tgt, sel = (np.asarray(out[k]) for k in ("inputs", "targets", "mask"))
    tok = np.asarray(tokens)
    assert np.array_equal(tgt, tok)
    assert not sel[:, 480:].any()
    assert np.array_equal(inp[~sel], tok[~sel])  # only selected positions change
    n_valid = int(np.asarray(valid).sum())
    assert abs(sel.sum() / n_valid - 0.15) < 0.003
    s_in, s_tok = inp[sel], tok[sel]
    masked = s_in == SPEC.mask_id
    same = s_in == s_tok
    rand = ~masked & ~same
    assert abs(masked.mean() - 0.80) < 0.01
    # 10% kept, plus random replacements that drew the original token (1 in 256)
    assert abs(same.mean() - (0.10 + 0.10 / 256)) < 0.007
    assert abs(rand.mean() - 0.10 * 255 / 256) < 0.007
    assert s_in[rand].min() >= 3 and s_in[rand].max() < VOCAB
    # pure: the same key gives the same corruption, another key another
    again = mlm_corrupt(jax.random.PRNGKey(1), tokens, valid, SPEC)
    assert np.array_equal(np.asarray(again["inputs"]), inp)
    other = mlm_corrupt(jax.random.PRNGKey(2), tokens, valid, SPEC)
    assert not np.array_equal(np.asarray(other["mask"]), sel)


def test_mlm_loss_counts_selected_positions_only():
    model = build_model(ENC)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"])
    tokens = _tokens(4, 16)
    batch = mlm_corrupt(jax.random.PRNGKey(3), tokens, jnp.ones_like(tokens, bool), SPEC)
    lg = jax.jit(lambda p, b: loss_and_grads(p, b, jax.random.PRNGKey(0), model=model))
    loss, _, n = lg(params, batch)
    sel = np.asarray(batch["mask"])
    assert int(n) == sel.sum() > 0
    nats = np.asarray(token_nats(model.apply({"params": params}, batch["inputs"]), tokens))
    np.testing.assert_allclose(float(loss), nats[sel].mean(), rtol=1e-5)
    # targets at unselected positions do not matter
    scrambled = dict(batch, targets=jnp.where(batch["mask"], tokens, 7))
    loss2, _, _ = lg(params, scrambled)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
