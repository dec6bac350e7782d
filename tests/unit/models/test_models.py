"""jaxlm.models (build_model, every family): causality, shapes, dtypes, logical axis
names, and that attention learns to copy."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import sharding
from jaxlm.config import MeshConfig, ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model

VOCAB = 259  # the byte tokenizer's
GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
MODERN = dataclasses.replace(
    GPT2, position="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, tie_embeddings=False,
    use_bias=False,
)
LSTM = ModelConfig(family="lstm", vocab_size=VOCAB, d_model=32, n_layers=2, max_seq_len=32)
MODELS = {"gpt2": GPT2, "modern": MODERN, "lstm": LSTM}


def _tokens(b: int, t: int, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB, dtype=jnp.int32)


def _init(cfg: ModelConfig, t: int = 8):
    model = build_model(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, t), jnp.int32))
    return model, variables


# ---------------------------------------------------------------------------------------------
# causality


@pytest.mark.parametrize("name", list(MODELS))
def test_causality(name):
    """d logits[:, t] / d embeddings[:, s] is exactly zero for s > t and nonzero for s <= t."""
    cfg = MODELS[name]
    b, T = 2, 8
    model, variables = _init(cfg, T)
    assert "perturbations" in variables, "the model must expose its embeddings via self.perturb"
    params = nn.meta.unbox(variables["params"])
    zeros = jax.tree.map(jnp.zeros_like, variables["perturbations"])
    tokens = _tokens(b, T)

    def logit_sum(pert, t):
        logits = model.apply({"params": params, "perturbations": pert}, tokens)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False).sum()

    grads = jax.jit(jax.vmap(lambda t: jax.grad(logit_sum)(zeros, t)))(jnp.arange(T))
    (g,) = jax.tree.leaves(grads)  # (T, b, T, d): [t, batch, position, feature]
    g = np.asarray(g)
    assert g.shape == (T, b, T, cfg.d_model)
    for t in range(T):
        future = g[t, :, t + 1:]
        assert np.all(future == 0.0), f"{name}: logits at {t} depend on later positions"
        past = np.abs(g[t, :, : t + 1]).sum(-1)  # (b, t+1)
        assert np.all(past > 0), f"{name}: logits at {t} ignore some earlier position"


@pytest.mark.parametrize("name", list(MODELS))
def test_future_tokens_do_not_change_past_logits(name):
    model, variables = _init(MODELS[name], 8)
    a = _tokens(2, 8, seed=1)
    b = a.at[:, 5:].set(_tokens(2, 3, seed=2))
    la = model.apply(variables, a)
    lb = model.apply(variables, b)
    np.testing.assert_array_equal(np.asarray(la[:, :5]), np.asarray(lb[:, :5]))
    assert not np.allclose(np.asarray(la[:, 5:]), np.asarray(lb[:, 5:]))


# ---------------------------------------------------------------------------------------------
# shapes, dtypes, parameter layout


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape_and_dtype(name):
    cfg = MODELS[name]
    model, variables = _init(cfg, 8)
    for b, t in [(3, 5), (1, 32)]:
        logits = model.apply({"params": variables["params"]}, _tokens(b, t))
        assert logits.shape == (b, t, VOCAB)
        assert logits.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("name", ["gpt2", "lstm"])
def test_bfloat16_compute_still_gives_float32_logits(name):
    cfg = dataclasses.replace(MODELS[name], dtype="bfloat16")
    model, variables = _init(cfg, 8)
    logits = model.apply(variables, _tokens(2, 8))
    assert logits.dtype == jnp.float32
    params = nn.meta.unbox(variables["params"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))  # param_dtype


def test_build_model_needs_vocab_size():
    with pytest.raises(JaxlmError, match="vocab_size"):
        build_model(dataclasses.replace(GPT2, vocab_size=None))


@pytest.mark.parametrize("name", list(MODELS))
def test_parameters_have_logical_axis_names(name):
    model, variables = _init(MODELS[name], 8)
    boxed = variables["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    specs = nn.get_partition_spec(boxed)
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    flat_params = jax.tree.leaves(nn.meta.unbox(boxed))
    assert len(flat_specs) == len(flat_params)
    n_kernels = 0
    for spec, p in zip(flat_specs, flat_params):
        assert len(spec) == p.ndim
        assert any(a is not None for a in spec), (spec, p.shape)
        if p.ndim >= 2:
            n_kernels += 1
    assert n_kernels >= 3
    allowed = {"batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "gates", "vocab",
               "vocab_embed", None}
    assert all(set(spec) <= allowed for spec in flat_specs)
    # and every name maps to the mesh through the rules table
    mesh = sharding.make_mesh(MeshConfig())
    shardings = sharding.logical_sharding(boxed, mesh)
    assert len(jax.tree.leaves(shardings)) == len(flat_params)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_transformer_learns_to_copy(position):
    """The second half of each row repeats the first: only attention can predict it. A model
    whose attention (or positions) were broken would stay near chance, log(17) = 2.83 nats."""
    import numpy as np

    from jaxlm.config import MeshConfig, ModelConfig, OptimConfig
    from jaxlm.models import build_model
    from jaxlm.sharding import make_mesh
    from jaxlm.train.optim import build_optimizer, schedule
    from jaxlm.train.state import init_state
    from jaxlm.train.step import compile_steps

    mesh = make_mesh(MeshConfig())
    model = build_model(ModelConfig(vocab_size=20, d_model=32, n_layers=2, n_heads=2,
                                    max_seq_len=24, position=position))
    oc = OptimConfig(lr=3e-3, warmup_steps=10)
    tx = build_optimizer(oc, 250)
    state, sh = init_state(model, tx, seed=0, seq_len=24, mesh=mesh)
    step, _ = compile_steps(model, tx, schedule(oc, 250), sh, mesh)
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 24), bool)
    mask[:, 12:] = True  # score only the copied half
    for _ in range(250):
        half = rng.integers(3, 20, (32, 12))
        toks = np.concatenate([half, half, half[:, :1]], 1).astype(np.int32)
        state, metrics = step(state, {"inputs": toks[:, :-1], "targets": toks[:, 1:], "mask": mask})
    assert float(metrics["loss"]) < 0.5
