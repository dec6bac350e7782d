"""μP and the per-group metrics through a run: the assembled optimizer applies the μP rates,
and metrics.jsonl / TensorBoard carry update_ratio/GROUP at every logged step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import config as config_lib
from jaxlm import sharding
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.train.metrics import load_metrics
from jaxlm.train.optim import build_optimizer
from jaxlm.train.setup import assemble

from helpers import TINY, tensorboard_tags


def test_assembled_optimizer_has_the_mup_rates():
    cfg = config_lib.load_config(None, TINY + ["model.mup_base_width=8", "optim.warmup_steps=0",
                                               "optim.schedule=constant"])
    cfg = config_lib.replace(cfg, **{"model.vocab_size": 259})
    asm = assemble(cfg, sharding.make_mesh(cfg.mesh, jax.devices()[:1]), ByteTokenizer())
    plain = build_optimizer(cfg.optim, cfg.train.steps)
    params = {"h_0": {"k": jnp.ones((4, 4)), "b": jnp.ones((4,))}, "wte": {"e": jnp.ones((5, 4))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    got, _ = asm.optimizer.update(grads, asm.optimizer.init(params), params)
    want, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_allclose(got["h_0"]["k"], want["h_0"]["k"] / 4, rtol=1e-6)  # 32 / 8
    np.testing.assert_allclose(got["h_0"]["b"], want["h_0"]["b"], rtol=1e-6)
    np.testing.assert_allclose(got["wte"]["e"], want["wte"]["e"], rtol=1e-6)


def test_logged_steps_carry_update_ratios(tiny_run):
    steps = [r for r in load_metrics(tiny_run) if "loss" in r and "event" not in r]
    assert steps
    for r in steps:  # the tiny GPT ties its embeddings: no separate output group
        ratios = {k: v for k, v in r.items() if k.startswith("update_ratio/")}
        assert set(ratios) == {"update_ratio/embedding", "update_ratio/hidden",
                               "update_ratio/vector"}, r
        assert all(0 < v < 1 for v in ratios.values()), ratios
    assert "train/update_ratio/hidden" in tensorboard_tags(tiny_run / "tensorboard")
