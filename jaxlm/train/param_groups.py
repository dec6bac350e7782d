"""Parameter groups (embedding, hidden, output, vector) keyed on parameter paths: per-group
learning-rate multipliers (μP) and per-group update/parameter RMS ratios (a step metric).

Groups, for every family:
- `embedding`: the token / position tables (`wte`, `wpe`; the LSTM's `embed`);
- `vector`: biases and norm scales (any leaf named bias/scale, or of one dim, a `scan_layers`
  layers axis aside);
- `output`: the output head's matrices (`lm_head`, `classifier`, the LSTM's `head`); absent
  with tied embeddings, where `wte` is the head;
- `hidden`: every other matrix (attention, MLP, LSTM gates).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from jaxlm.config import ModelConfig
from jaxlm.models import mup

GROUPS = ("embedding", "hidden", "output", "vector")
_EMBEDDINGS = ("wte", "wpe", "embed")
_HEADS = ("lm_head", "classifier", "head")


def _key(entry: Any) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def param_group(path: tuple, leaf: Any) -> str:
    """The group of the leaf at `path` (a jax tree path into a params tree)."""
    top = _key(path[0]) if path else ""
    stacked = top == "h"  # scan_layers: a leading layers axis that does not count
    if top in _EMBEDDINGS:
        return "embedding"
    if _key(path[-1]) in ("bias", "scale") or len(jnp.shape(leaf)) - int(stacked) < 2:
        return "vector"  # by name too: a query bias is (heads, head_dim), yet a bias
    return "output" if top in _HEADS else "hidden"


def group_labels(params: Any) -> Any:
    """A tree like `params` holding each leaf's group name."""
    return jax.tree_util.tree_map_with_path(param_group, params)


def lr_multipliers(cfg: ModelConfig) -> Optional[dict[str, float]]:
    """Per-group learning-rate factors for Adam-style optimizers, or None (all 1).

    μP (`model.mup_base_width`): hidden matrices 1/m, everything else 1 (with the model's 1/m
    output multiplier, the head keeps its rate: `jaxlm.models.mup`)."""
    if cfg.mup_base_width is None:
        return None
    return {"embedding": 1.0, "hidden": 1.0 / mup.width_mult(cfg), "output": 1.0, "vector": 1.0}


def scale_by_group(optimizer: optax.GradientTransformation, multipliers: Mapping[str, float]
                   ) -> optax.GradientTransformation:
    """`optimizer` whose final updates (weight decay included, as a per-group learning rate
    scales it) are multiplied by their group's factor. Stateless: the optimizer state, its
    shardings and checkpoints are those of `optimizer`."""

    def update(grads, state, params=None):
        updates, state = optimizer.update(grads, state, params)
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, u: u * jnp.asarray(multipliers[param_group(path, u)], u.dtype), updates)
        return scaled, state

    return optax.GradientTransformation(optimizer.init, update)


def update_ratios(updates: Any, params: Any) -> dict[str, jax.Array]:
    """{"update_ratio/GROUP": RMS(updates) / RMS(params)} over each group's leaves together:
    the relative size of a step (scalars, float32; groups the model lacks are left out)."""
    sums: dict[str, list] = {}
    for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates),
                            jax.tree_util.tree_leaves(params)):
        s = sums.setdefault(param_group(path, p), [0.0, 0.0])
        s[0] = s[0] + jnp.sum(jnp.square(u.astype(jnp.float32)))
        s[1] = s[1] + jnp.sum(jnp.square(p.astype(jnp.float32)))
    # equal element counts: the ratio of sums of squares is the ratio of the mean squares
    return {f"update_ratio/{g}": jnp.sqrt(su / jnp.maximum(sp, 1e-30))
            for g, (su, sp) in sorted(sums.items())}


__all__ = ["GROUPS", "param_group", "group_labels", "lr_multipliers", "scale_by_group",
           "update_ratios"]
