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


@pytest.mark.parametrize("shape, mid", [("linear", 0.55), ("cosine", 0.55),
                                        ("1-sqrt", 0.1 + 0.9 * (1 - 0.5 ** 0.5))])
def test_wsd_shape_at_its_boundaries(shape, mid):
    """warmup 10, constant to step 80 (decay_fraction 0.2 of 100), decay to 0.1 at step 100."""
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2,
                      decay_shape=shape, min_lr_ratio=0.1)
    s = schedule(cfg, 100)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
    assert [float(s(i)) for i in (10, 45, 80)] == [1.0, 1.0, 1.0]  # exactly the constant lr
    assert float(s(81)) < 1.0
    assert float(s(90)) == pytest.approx(mid, abs=1e-6)
    assert float(s(100)) == pytest.approx(0.1, abs=1e-6)
    assert all(float(s(i)) >= float(s(i + 1)) for i in range(80, 100))
    # up to its decay start, the constant schedule's values exactly (branches depend on it)
    const = schedule(dataclasses.replace(cfg, schedule="constant"), 100)
    assert [float(s(i)) for i in range(81)] == [float(const(i)) for i in range(81)]
    flat = schedule(dataclasses.replace(cfg, decay_fraction=0.0), 100)
    assert float(flat(100)) == 1.0


def test_wsd_decay_must_not_reach_into_the_warmup():
    from jaxlm.config import load_config
    from jaxlm.errors import JaxlmError

    with pytest.raises(JaxlmError, match="into the optim.warmup_steps=50 warmup"):
        load_config(None, ["optim.schedule=wsd", "optim.decay_fraction=0.99", "train.steps=100"])
    with pytest.raises(JaxlmError, match="optim.decay_shape"):
        load_config(None, ["optim.decay_shape=square"])
