"""jaxlm.train.param_groups: parameter groups, per-group learning rates (μP) and the per-group
update/parameter RMS ratios the train step reports."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm.config import ModelConfig, OptimConfig
from jaxlm.models import build_model
from jaxlm.train import param_groups
from jaxlm.train.optim import build_optimizer

GPT = ModelConfig(vocab_size=61, d_model=32, n_layers=1, n_heads=2, max_seq_len=16)


def _params(cfg: ModelConfig):
    """The parameter shapes (no init is run)."""
    init = build_model(cfg).init
    return nn.unbox(jax.eval_shape(init, jax.random.PRNGKey(0), jnp.zeros((2, 8), jnp.int32)))[
        "params"]


def _flat_labels(params) -> dict[str, str]:
    labels = param_groups.group_labels(params)
    return {"/".join(str(getattr(k, "key", k)) for k in path): g
            for path, g in jax.tree_util.tree_leaves_with_path(labels)}


@pytest.mark.parametrize("scan", [False, True])
def test_transformer_groups(scan):
    cfg = dataclasses.replace(GPT, tie_embeddings=False, scan_layers=scan)
    labels = _flat_labels(_params(cfg))
    h = "h" if scan else "h_0"
    assert labels["wte/embedding"] == labels["wpe"] == "embedding"
    assert labels["lm_head/kernel"] == "output"
    for name in ("attn/query/kernel", "attn/out/kernel", "mlp/up/kernel", "mlp/down/kernel"):
        assert labels[f"{h}/{name}"] == "hidden", name
    for name in ("attn/query/bias", "ln_1/norm/scale", "mlp/down/bias"):
        assert labels[f"{h}/{name}"] == "vector", name
    assert labels["ln_f/norm/scale"] == "vector"
    assert set(labels.values()) == set(param_groups.GROUPS)


def test_lstm_groups():
    cfg = ModelConfig(family="lstm", vocab_size=61, d_model=16, n_layers=1, tie_embeddings=False)
    labels = _flat_labels(_params(cfg))
    assert labels["embed/embedding"] == "embedding"
    assert labels["lstm_0/w_ih"] == labels["lstm_0/w_hh"] == "hidden"
    assert labels["lstm_0/b_ih"] == "vector"
    assert labels["head/kernel"] == "output"


def test_lr_multipliers_reach_their_groups():
    """Adam's first step is lr * sign(g) (up to eps): with μP factors, each leaf's step is
    exactly its group's factor times the plain one, weight decay included."""
    cfg = dataclasses.replace(GPT, d_model=64, mup_base_width=16, tie_embeddings=False)
    assert param_groups.lr_multipliers(GPT) is None
    mult = param_groups.lr_multipliers(cfg)
    assert mult == {"embedding": 1.0, "hidden": 0.25, "output": 1.0, "vector": 1.0}
    params = {"wte": {"embedding": jnp.ones((5, 4))}, "h": {"k": jnp.ones((2, 4, 4)),
              "b": jnp.ones((2, 4))}, "lm_head": {"kernel": jnp.ones((4, 5))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    ocfg = OptimConfig(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5)
    plain, scaled = build_optimizer(ocfg, 10), build_optimizer(ocfg, 10, group_lr=mult)
    u0, s0 = jax.jit(plain.update)(grads, plain.init(params), params)  # jit: fewer compiles
    u1, s1 = jax.jit(scaled.update)(grads, scaled.init(params), params)
    assert jax.tree.structure(s0) == jax.tree.structure(s1)  # checkpoints unchanged
    want = {"wte": 1.0, "h": 0.25, "lm_head": 1.0}
    for top, m in want.items():
        for a, b in zip(jax.tree.leaves(u0[top]), jax.tree.leaves(u1[top])):
            factor = 1.0 if a.ndim - (top == "h") < 2 else m  # the stacked bias: a vector
            np.testing.assert_allclose(b, factor * a, rtol=1e-6)
    assert float(jnp.abs(u1["h"]["k"]).max()) > 0


def test_update_ratios_match_numpy():
    params = {"wte": {"embedding": jnp.arange(6.0).reshape(3, 2) + 1},
              "h_0": {"k": jnp.ones((2, 2)) * 2, "b": jnp.array([3.0, 4.0])},
              "lm_head": {"kernel": jnp.ones((2, 3))}}
    updates = jax.tree.map(lambda p: 0.1 * p ** 2, params)
    got = {k: float(v) for k, v in jax.jit(param_groups.update_ratios)(updates, params).items()}

    def ratio(*names):
        u = np.concatenate([np.ravel(0.1 * np.asarray(p) ** 2) for p in names])
        p = np.concatenate([np.ravel(np.asarray(p)) for p in names])
        return np.sqrt(np.mean(u ** 2)) / np.sqrt(np.mean(p ** 2))

    assert got == pytest.approx({
        "update_ratio/embedding": ratio(params["wte"]["embedding"]),
        "update_ratio/hidden": ratio(params["h_0"]["k"]),
        "update_ratio/vector": ratio(params["h_0"]["b"]),
        "update_ratio/output": ratio(params["lm_head"]["kernel"]),
    }, rel=1e-5)


def test_train_step_reports_the_ratio_of_its_update():
    """The step's update_ratio/* metrics are RMS(new - old) / RMS(old) per group."""
    from jaxlm import sharding
    from jaxlm.config import MeshConfig
    from jaxlm.train.optim import schedule
    from jaxlm.train.state import init_state
    from jaxlm.train.step import compile_steps

    cfg = dataclasses.replace(GPT, tie_embeddings=True)
    ocfg = OptimConfig(warmup_steps=0, grad_clip=0.0)
    model, mesh = build_model(cfg), sharding.make_mesh(MeshConfig(data=1), jax.devices()[:1])
    opt, lr = build_optimizer(ocfg, 10), schedule(ocfg, 10)
    state, shardings = init_state(model, opt, seed=0, seq_len=16, mesh=mesh)
    step, _ = compile_steps(model, opt, lr, shardings, mesh)
    old = jax.device_get(state.params)
    ids = np.random.default_rng(0).integers(0, 61, (4, 17)).astype(np.int32)
    state, metrics = step(state, {"inputs": ids[:, :-1], "targets": ids[:, 1:],
                                  "mask": np.ones((4, 16), bool)})
    new, sums = jax.device_get(state.params), {}
    for (path, group), a, b in zip(
            jax.tree_util.tree_leaves_with_path(param_groups.group_labels(old)),
            jax.tree.leaves(new), jax.tree.leaves(old)):
        s = sums.setdefault(f"update_ratio/{group}", np.zeros(2))
        s += [np.sum((np.float64(a) - b) ** 2), np.sum(np.float64(b) ** 2)]
    assert set(sums) == {"update_ratio/embedding", "update_ratio/hidden", "update_ratio/vector"}
    for k, (su, sp) in sums.items():  # tied embeddings: no output group
        assert float(metrics[k]) == pytest.approx(np.sqrt(su / sp), rel=1e-3), k
        assert 0 < np.sqrt(su / sp) < 1
