"""jaxlm.train.optim: schedules and weight decay."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxlm.config import OptimConfig
from jaxlm.train.optim import build_optimizer, schedule


def test_schedule_shape():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    s = schedule(cfg, 100)
    assert float(s(0)) == 0.0
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(100)) == pytest.approx(0.1, abs=1e-6)
    assert all(float(s(i)) >= float(s(i + 1)) for i in range(10, 100))
    lin = schedule(dataclasses.replace(cfg, schedule="linear"), 100)
    assert float(lin(55)) == pytest.approx(0.55)
    const = schedule(dataclasses.replace(cfg, schedule="constant", warmup_steps=0), 100)
    assert float(const(0)) == float(const(99)) == 1.0


def test_weight_decay_skips_vectors():
    """With zero gradients, AdamW's decoupled decay shrinks matrices but leaves biases alone."""
    import optax

    opt = build_optimizer(OptimConfig(lr=0.1, warmup_steps=0, schedule="constant",
                                      weight_decay=0.5, grad_clip=0.0), 10)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    assert float(new["kernel"][0, 0]) == pytest.approx(1 - 0.1 * 0.5)
    assert float(new["bias"][0]) == 1.0
