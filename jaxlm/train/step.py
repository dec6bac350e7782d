"""Pure train and eval steps (no I/O); `compile_steps` jits them over a mesh with shardings."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxlm import sharding
from jaxlm.train.param_groups import update_ratios
from jaxlm.train.state import TrainState

Batch = dict[str, jax.Array]  # inputs, targets (b, t) int32; mask (b, t) bool
# classification: inputs (b, t) int32, valid (b, t) bool (False at padding), targets (b,) int32
# labels, mask (b,) bool (False for the padding rows of a last eval batch)
Metrics = dict[str, jax.Array]
BATCH_KEYS = {"clm": ("inputs", "targets", "mask"), "mlm": ("inputs", "targets", "mask"),
              "classify": ("inputs", "valid", "targets", "mask")}


@dataclasses.dataclass(frozen=True)
class MlmSpec:
    """BERT-style corruption: `prob` of the valid tokens are selected; of those 80% become
    `mask_id`, 10% a uniform random token in [random_low, random_high), 10% stay unchanged."""

    mask_id: int
    random_low: int
    random_high: int
    prob: float = 0.15


def mlm_corrupt(rng: jax.Array, tokens_bt: jax.Array, valid_bt: jax.Array, spec: MlmSpec) -> Batch:
    """(inputs = corrupted tokens, targets = the original tokens, mask = the selected positions):
    a batch for the masked-LM loss, which counts the selected positions only. Pure: the same
    rng gives the same corruption."""
    sel_rng, kind_rng, tok_rng = jax.random.split(rng, 3)
    selected_bt = (jax.random.uniform(sel_rng, tokens_bt.shape) < spec.prob) & valid_bt
    u_bt = jax.random.uniform(kind_rng, tokens_bt.shape)
    random_bt = jax.random.randint(tok_rng, tokens_bt.shape, spec.random_low, spec.random_high,
                                   tokens_bt.dtype)
    corrupted = jnp.where(u_bt < 0.8, spec.mask_id, jnp.where(u_bt < 0.9, random_bt, tokens_bt))
    inputs_bt = jnp.where(selected_bt, corrupted, tokens_bt).astype(tokens_bt.dtype)
    spec_bl = ("batch", "length")
    return {"inputs": sharding.constrain(inputs_bt, spec_bl), "targets": tokens_bt,
            "mask": sharding.constrain(selected_bt, spec_bl)}


def _mlm_batch(batch: Batch, rng: jax.Array, spec: MlmSpec) -> Batch:
    """A packed LM batch -> its masked-LM form: the model reads `inputs` (those whose target is
    real text, `mask`) and predicts the selected ones."""
    return mlm_corrupt(rng, batch["inputs"], batch["mask"], spec)


def token_nats(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """Per-token cross-entropy in nats, (b, t) float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_btv.astype(jnp.float32), targets_bt)


def _microbatches(batch: Batch, k: int) -> Batch:
    """(B, T) -> (k, B/k, T), microbatch j = rows j, j+k, j+2k, ...

    Strided, not contiguous: each device's block of rows splits into k equal parts, so every
    microbatch stays spread over all data-parallel devices and the reshape moves no data.
    """
    def split(x):
        x = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
        return sharding.constrain(x, (None, "batch", "length")[:x.ndim])

    return {key: split(v) for key, v in batch.items()}


def loss_and_grads(
    params: Any, batch: Batch, dropout_rng: jax.Array, *, model: nn.Module, grad_accum: int = 1,
) -> tuple[jax.Array, Any, jax.Array]:
    """(mean nats per unmasked target token, its gradient, number of those tokens).

    With grad_accum = k the batch runs as k sequential microbatches (a `lax.scan`) whose summed
    nats and gradients are divided by the token count of the whole batch at the end: the same
    update as one pass over the whole batch, with 1/k of the activation memory.
    """
    def sum_nats(params, mb: Batch, rng: jax.Array) -> jax.Array:
        logits_btv = model.apply({"params": params}, mb["inputs"], train=True,
                                 rngs={"dropout": rng}, **_model_kwargs(mb))
        return (token_nats(logits_btv, mb["targets"]) * mb["mask"].astype(jnp.float32)).sum()

    n_tokens = batch["mask"].astype(jnp.float32).sum()
    if grad_accum == 1:
        nats, grads = jax.value_and_grad(sum_nats)(params, batch, dropout_rng)
    else:
        def body(carry, xs):
            nats, grads = carry
            j, mb = xs
            n, g = jax.value_and_grad(sum_nats)(params, mb, jax.random.fold_in(dropout_rng, j))
            return (nats + n, jax.tree.map(jnp.add, grads, g)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (nats, grads), _ = jax.lax.scan(
            body, (jnp.zeros((), jnp.float32), zeros),
            (jnp.arange(grad_accum), _microbatches(batch, grad_accum)),
        )
    denom = jnp.maximum(n_tokens, 1.0)
    return nats / denom, jax.tree.map(lambda g: g / denom, grads), n_tokens


def _model_kwargs(batch: Batch) -> dict:
    return {"valid_bt": batch["valid"]} if "valid" in batch else {}


def poison_steps(step: jax.Array, loss: jax.Array, grads: Any, steps: Sequence[int]):
    """Debugging aid (`train.debug_nan_steps`): NaN loss and gradients when `step` is listed."""
    hit = jnp.isin(step, jnp.asarray(steps, jnp.int32))
    nan = lambda x: jnp.where(hit, jnp.full_like(x, jnp.nan), x)  # noqa: E731
    return nan(loss), jax.tree.map(nan, grads)


def keep_if_finite(ok: jax.Array, old: TrainState, new: TrainState) -> TrainState:
    """`new`, or - where `ok` is False - `new` with `old`'s params and optimizer state: the
    update is skipped, the step (and with it the data, the schedule, the dropout key) moves on."""
    keep = lambda n, o: jnp.where(ok, n, o)  # noqa: E731
    return new.replace(params=jax.tree.map(keep, new.params, old.params),
                       opt_state=jax.tree.map(keep, new.opt_state, old.opt_state))


def train_step(
    state: TrainState, batch: Batch, *, model: nn.Module,
    optimizer: optax.GradientTransformation, lr_schedule: optax.Schedule, grad_accum: int = 1,
    debug_nan_steps: Sequence[int] = (), mlm: Optional[MlmSpec] = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer update on the mean cross-entropy over unmasked target tokens (with `mlm`:
    over the positions selected by corrupting the batch with the step's rng; classification
    batches: over the rows, one label each).

    An update whose loss, gradient norm or update norm is not finite is skipped (`keep_if_finite`) and
    flagged in `metrics["nonfinite"]`; `debug_nan_steps` (1-based) poisons those steps.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    if mlm is not None:
        batch = _mlm_batch(batch, jax.random.fold_in(dropout_rng, _MLM_SALT), mlm)
    loss, grads, n_tokens = loss_and_grads(state.params, batch, dropout_rng, model=model,
                                           grad_accum=grad_accum)
    if debug_nan_steps:
        loss, grads = poison_steps(state.step + 1, loss, grads, debug_nan_steps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    # else: skip the update. The update itself is checked too: a finite gradient can still
    # make a non-finite step (an overflowing optimizer state, a learning rate that became NaN).
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": lr_schedule(state.step),
        "tokens": n_tokens,
        "nonfinite": jnp.logical_not(ok).astype(jnp.int32),
        **update_ratios(updates, state.params),  # per parameter group: RMS(update)/RMS(param)
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return keep_if_finite(ok, state, new_state), metrics


def eval_step(params: Any, batch: Batch, token_bytes: jax.Array, *, model: nn.Module,
              mlm: Optional[MlmSpec] = None, num_labels: int = 0) -> Metrics:
    """Sums over the batch: nats, target tokens, the UTF-8 bytes those targets stand for, the
    targets predicted right (argmax) and how often each token id is a target (`target_counts`,
    (vocab,): the accuracy of always guessing the commonest one is the baseline accuracy must
    beat). With `mlm` the batch is corrupted with a fixed key (the same positions every eval).
    Classification (`num_labels` > 0): per row, plus the (true, predicted) confusion matrix."""
    if mlm is not None:
        batch = _mlm_batch(batch, jax.random.PRNGKey(_MLM_SALT), mlm)
    logits = model.apply({"params": params}, batch["inputs"], train=False, **_model_kwargs(batch))
    mask = batch["mask"].astype(jnp.float32)
    pred = jnp.argmax(logits, axis=-1)
    out = {
        "nats": (token_nats(logits, batch["targets"]) * mask).sum(),
        "tokens": mask.sum(),
        "correct": ((pred == batch["targets"]) * mask).sum(),
    }
    if num_labels:
        true_bl = jax.nn.one_hot(batch["targets"], num_labels) * mask[:, None]
        out["confusion"] = true_bl.T @ jax.nn.one_hot(pred, num_labels)
        out["bytes"] = jnp.zeros((), jnp.float32)
    else:
        out["bytes"] = (token_bytes[batch["targets"]] * mask).sum()
        out["target_counts"] = jnp.zeros(logits.shape[-1], jnp.float32).at[batch["targets"]].add(mask)
    return out


_MLM_SALT = 0x6D6C6D  # "mlm": the corruption key is fold_in(step key, salt)


def batch_shardings(mesh: Mesh, objective: str) -> dict[str, Any]:
    """The shardings of a train batch's arrays (what `sharding.put_batch` places)."""
    batch_sh = {k: sharding.batch_sharding(mesh) for k in BATCH_KEYS[objective]}
    if objective == "classify":  # (b,) labels and row masks: rows split like the batch
        batch_sh["targets"] = batch_sh["mask"] = sharding.rows_sharding(mesh)
    return batch_sh


def abstract_batch(mesh: Mesh, objective: str, batch_size: int, seq_len: int
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """A train batch's shapes, dtypes and shardings, as the data pipeline makes it: int32
    tokens, bool masks; (batch,) labels and row masks for classifiers."""
    dtypes = {"inputs": jnp.int32, "targets": jnp.int32, "mask": jnp.bool_, "valid": jnp.bool_}
    rows = {"targets", "mask"} if objective == "classify" else set()
    return {k: jax.ShapeDtypeStruct((batch_size,) if k in rows else (batch_size, seq_len),
                                    dtypes[k], sharding=s)
            for k, s in batch_shardings(mesh, objective).items()}


def compile_steps(
    model: nn.Module, optimizer: optax.GradientTransformation, lr_schedule: optax.Schedule,
    state_shardings: Any, mesh: Mesh, *, grad_accum: int = 1, debug_nan_steps: Sequence[int] = (),
    objective: str = "clm", mlm: Optional[MlmSpec] = None, num_labels: int = 0,
) -> tuple[Callable, Callable]:
    """(train_step(state, batch), eval_step(params, batch, token_bytes)) jitted over `mesh`.

    The train state is donated: its buffers are reused for the updated state. The model's
    activation constraints resolve through the logical rules against `mesh` while tracing.
    """
    batch_sh = batch_shardings(mesh, objective)
    mlm = mlm if objective == "mlm" else None
    num_labels = num_labels if objective == "classify" else 0
    rep = sharding.replicated(mesh)
    def train_fn(s: TrainState, b: Batch):
        with sharding.activation_mesh(mesh):
            return train_step(s, b, model=model, optimizer=optimizer, lr_schedule=lr_schedule,
                              grad_accum=grad_accum, debug_nan_steps=tuple(debug_nan_steps),
                              mlm=mlm)

    def eval_fn(p: Any, b: Batch, tb: jax.Array):
        with sharding.activation_mesh(mesh):
            return eval_step(p, b, tb, model=model, mlm=mlm, num_labels=num_labels)

    train = jax.jit(
        train_fn,
        in_shardings=(state_shardings, batch_sh),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )
    evaluate = jax.jit(
        eval_fn,
        in_shardings=(state_shardings.params, batch_sh, rep),
        out_shardings=rep,
    )
    return train, evaluate
