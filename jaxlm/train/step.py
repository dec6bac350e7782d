"""Pure train and eval steps (no I/O); `compile_steps` jits them over a mesh with shardings."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxlm import sharding
from jaxlm.train.state import TrainState

Batch = dict[str, jax.Array]  # inputs, targets (b, t) int32; mask (b, t) bool
Metrics = dict[str, jax.Array]


def token_nats(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """Per-token cross-entropy in nats, (b, t) float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_btv.astype(jnp.float32), targets_bt)


def train_step(
    state: TrainState, batch: Batch, *, model: nn.Module,
    optimizer: optax.GradientTransformation, lr_schedule: optax.Schedule,
) -> tuple[TrainState, Metrics]:
    """One optimizer update on the mean cross-entropy over unmasked target tokens."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    mask_bt = batch["mask"].astype(jnp.float32)
    n_tokens = jnp.maximum(mask_bt.sum(), 1.0)

    def loss_fn(params):
        logits_btv = model.apply(
            {"params": params}, batch["inputs"], train=True, rngs={"dropout": dropout_rng}
        )
        return (token_nats(logits_btv, batch["targets"]) * mask_bt).sum() / n_tokens

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "learning_rate": lr_schedule(state.step),
        "tokens": mask_bt.sum(),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, token_bytes: jax.Array, *, model: nn.Module) -> Metrics:
    """Sums over the batch: nats, target tokens, and the UTF-8 bytes those targets stand for."""
    logits_btv = model.apply({"params": params}, batch["inputs"], train=False)
    mask_bt = batch["mask"].astype(jnp.float32)
    return {
        "nats": (token_nats(logits_btv, batch["targets"]) * mask_bt).sum(),
        "tokens": mask_bt.sum(),
        "bytes": (token_bytes[batch["targets"]] * mask_bt).sum(),
    }


def compile_steps(
    model: nn.Module, optimizer: optax.GradientTransformation, lr_schedule: optax.Schedule,
    state_shardings: Any, mesh: Mesh,
) -> tuple[Callable, Callable]:
    """(train_step(state, batch), eval_step(params, batch, token_bytes)) jitted over `mesh`.

    The train state is donated: its buffers are reused for the updated state.
    """
    batch_sh = {k: sharding.batch_sharding(mesh) for k in ("inputs", "targets", "mask")}
    rep = sharding.replicated(mesh)
    train = jax.jit(
        lambda s, b: train_step(s, b, model=model, optimizer=optimizer, lr_schedule=lr_schedule),
        in_shardings=(state_shardings, batch_sh),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )
    evaluate = jax.jit(
        lambda p, b, tb: eval_step(p, b, tb, model=model),
        in_shardings=(state_shardings.params, batch_sh, rep),
        out_shardings=rep,
    )
    return train, evaluate
