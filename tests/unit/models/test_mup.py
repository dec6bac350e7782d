"""μP (`model.mup_base_width`, jaxlm.models.mup): equal to the standard parametrization at the
base width; init, attention and output scales at other widths; the coordinate check."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm.config import ModelConfig, OptimConfig, load_config
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model
from jaxlm.models.layers import Attention
from jaxlm.train.optim import build_optimizer
from jaxlm.train.param_groups import lr_multipliers
from jaxlm.train.step import loss_and_grads

V, T = 64, 16
SP = ModelConfig(vocab_size=V, d_model=64, n_layers=1, n_heads=2, max_seq_len=T,
                 attention_impl="xla", dtype="float32")


def _tokens(b: int = 4) -> jax.Array:
    rows = (np.random.default_rng(0).integers(0, V, (b, 1)) + np.arange(T + 1)) % V
    return jnp.asarray(rows, jnp.int32)


def _init(cfg: ModelConfig):
    init = jax.jit(build_model(cfg).init)  # one compile: faster than op-by-op
    return nn.unbox(init(jax.random.PRNGKey(0), _tokens()[:, :-1]))["params"]


def _logits(cfg: ModelConfig, params, x) -> jax.Array:
    return jax.jit(build_model(cfg).apply)({"params": params}, x)


def test_base_width_is_the_standard_parametrization():
    sp, mup = _init(SP), _init(dataclasses.replace(SP, mup_base_width=SP.d_model))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), sp, mup))
    x = _tokens()[:, :-1]
    np.testing.assert_array_equal(_logits(SP, sp, x),
                                  _logits(dataclasses.replace(SP, mup_base_width=64), sp, x))


def test_wider_than_base_scales_hidden_init_and_output_logits():
    """Width mult m = 4: hidden matrices init with std / sqrt(4), embeddings unchanged; with the
    queries zeroed (uniform attention, whatever its scale) the logits are the standard ones / 4."""
    cfg = dataclasses.replace(SP, mup_base_width=16)
    mup, sp = _init(cfg), _init(SP)
    for name in ("query", "key", "value"):
        assert float(mup["h_0"]["attn"][name]["kernel"].std()) == pytest.approx(0.01, rel=0.1)
    assert float(mup["h_0"]["mlp"]["up"]["kernel"].std()) == pytest.approx(0.01, rel=0.1)
    out_std = 0.01 / np.sqrt(2 * SP.n_layers)
    assert float(mup["h_0"]["mlp"]["down"]["kernel"].std()) == pytest.approx(out_std, rel=0.1)
    assert float(mup["wte"]["embedding"].std()) == pytest.approx(0.02, rel=0.1)
    for layer in ("h_0",):
        q = sp[layer]["attn"]["query"]
        q["kernel"], q["bias"] = jnp.zeros_like(q["kernel"]), jnp.zeros_like(q["bias"])
    x = _tokens()[:, :-1]
    np.testing.assert_allclose(_logits(cfg, sp, x), _logits(SP, sp, x) / 4, rtol=1e-5, atol=1e-7)


def test_query_scale_makes_the_attention_scale_one_over_head_dim():
    """q_scale = 1/sqrt(head_dim) turns dot_product_attention's 1/sqrt(head_dim) into 1/head_dim:
    the same as scaling the query projection (kernel and bias) by that factor."""
    h = 16
    kw = dict(n_heads=2, n_kv_heads=2, head_dim=h, use_bias=True, use_rope=False,
              rope_theta=1e4, init_std=0.5, out_init_std=0.5, dtype=jnp.float32,
              param_dtype=jnp.float32, implementation="xla")
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 32))
    pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
    plain, scaled = Attention(**kw), Attention(**kw, q_scale=1 / np.sqrt(h))
    params = nn.unbox(plain.init(jax.random.PRNGKey(0), x, pos))["params"]
    moved = jax.tree.map(lambda a: a, params)
    moved["query"] = jax.tree.map(lambda a: a / np.sqrt(h), params["query"])
    want = plain.apply({"params": moved}, x, pos)
    np.testing.assert_allclose(scaled.apply({"params": params}, x, pos), want, rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(plain.apply({"params": params}, x, pos), want, atol=1e-3)


def _coords(width: int, base, steps: int = 4, lr: float = 1e-2) -> np.ndarray:
    """RMS of each block's output and of the logits after `steps` Adam steps (constant lr,
    jaxlm's optimizer with the model's per-group rates)."""
    cfg = dataclasses.replace(SP, d_model=width, mup_base_width=base)
    model = build_model(cfg)
    ocfg = OptimConfig(lr=lr, warmup_steps=0, schedule="constant", weight_decay=0.0,
                       grad_clip=0.0)
    opt = build_optimizer(ocfg, steps, group_lr=lr_multipliers(cfg))
    rows = _tokens(8)
    batch = {"inputs": rows[:, :-1], "targets": rows[:, 1:], "mask": jnp.ones((8, T), bool)}

    @jax.jit
    def run(key):
        params = nn.unbox(model.init(key, batch["inputs"]))["params"]

        def body(carry, _):
            p, s = carry
            _, g, _ = loss_and_grads(p, batch, key, model=model)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        logits, inter = model.apply({"params": params}, batch["inputs"],
                                    capture_intermediates=True, mutable=["intermediates"])
        acts = [inter["intermediates"][f"h_{i}"]["__call__"][0][0] for i in range(cfg.n_layers)]
        return jnp.stack([jnp.sqrt(jnp.mean(jnp.square(a))) for a in [*acts, logits]])

    return np.asarray(run(jax.random.PRNGKey(0)))


def test_coordinate_check():
    """The μP paper's coordinate check: after a few Adam steps, activations grow with width in
    the standard parametrization and stay flat under μP (widths 32 -> 128, base 32)."""
    sp_growth = _coords(128, None) / _coords(32, None)
    mup_growth = _coords(128, 32) / _coords(32, 32)
    assert (sp_growth > 2.5).all(), sp_growth  # measured: 4-7x
    assert ((mup_growth > 0.6) & (mup_growth < 1.4)).all(), mup_growth  # measured: 0.8


@pytest.mark.parametrize("override,needle", [
    (["model.family=lstm", "model.mup_base_width=16"], "model.mup_base_width"),
    (["model.mup_base_width=16", "optim.name=sgd"], "optim.name=sgd"),
    (["model.mup_base_width=15", "model.n_heads=2"], "model.mup_base_width=15"),
    (["model.mup_base_width=0"], "model.mup_base_width"),
])
def test_bad_mup_configs_name_the_key(override, needle):
    with pytest.raises(JaxlmError, match=needle.replace(".", r"\.")):
        load_config(None, override)
