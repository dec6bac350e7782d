"""jaxlm.generate.sample_tokens: greedy is the model's argmax, sampling is seeded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.config import ModelConfig
from jaxlm.models import build_model

VOCAB = 259  # the byte tokenizer's
GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)


def _init(cfg: ModelConfig, t: int = 8):
    model = build_model(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, t), jnp.int32))
    return model, variables


def test_sampling():
    from jaxlm.generate import sample_tokens

    model, variables = _init(GPT2, 8)
    params = nn.meta.unbox(variables["params"])
    prompt = [10, 11, 12]
    greedy = np.asarray(sample_tokens(model, params, prompt, num_samples=3, max_new_tokens=5,
                                      max_len=32, temperature=0.0))
    assert greedy.shape == (3, 8)
    assert (greedy[:, :3] == prompt).all()
    assert (greedy == greedy[0]).all()  # greedy: every sample the same
    # greedy continuation = argmax of the model's own next-token logits
    logits = model.apply({"params": params}, jnp.asarray(greedy[:1, :7]))
    assert np.array_equal(np.asarray(logits[0, 2:7].argmax(-1)), greedy[0, 3:8])
    # the same shapes: temperature and seed are traced, so this reuses the compiled loop
    hot = np.asarray(sample_tokens(model, params, prompt, num_samples=3, max_new_tokens=5,
                                   max_len=32, temperature=1.0, seed=1))
    assert hot.shape == (3, 8)
    assert (hot[:, :3] == prompt).all() and (hot >= 0).all() and (hot < VOCAB).all()
    assert not (hot == hot[0]).all()  # sampled rows differ
