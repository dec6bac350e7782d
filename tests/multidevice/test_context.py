"""Context parallelism and multi-slice meshes on 8 fake CPU devices: losses and gradients equal
the single-device run's."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxlm import sharding
from jaxlm.config import MeshConfig, ModelConfig
from jaxlm.models import build_model, context_attention as ca
from jaxlm.models.transformer import stack_layers
from jaxlm.train.optim import build_optimizer
from jaxlm.train.state import init_state, state_shardings
from jaxlm.train.step import loss_and_grads

from test_meshes import BATCH, GPT, OPTIM, SEQ, STEPS, _batches

ROPE_GQA = dataclasses.replace(GPT, position="rope", n_kv_heads=2)


def _params(cfg: ModelConfig):
    mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:1])
    state, _ = init_state(build_model(cfg), build_optimizer(OPTIM, STEPS), seed=0, seq_len=SEQ,
                          mesh=mesh)
    return jax.device_get(state.params)


def _loss_grads(cfg: ModelConfig, mesh: Mesh, params, batch):
    model = build_model(cfg)
    _, shardings = state_shardings(model, build_optimizer(OPTIM, STEPS), SEQ, mesh)

    def fn(p, b):
        with sharding.activation_mesh(mesh):
            return loss_and_grads(p, b, jax.random.PRNGKey(0), model=model)[:2]

    batch_sh = sharding.batch_sharding(mesh)
    out = jax.jit(fn, in_shardings=(shardings.params, batch_sh))(
        jax.device_put(params, shardings.params), jax.device_put(batch, batch_sh))
    return jax.device_get(out)


def _assert_close(got, want, atol=2e-6):
    loss, grads = got
    np.testing.assert_allclose(loss, want[0], atol=atol, rtol=0)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(g, w, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture()
def kernel_shapes(monkeypatch):
    """(q, gathered k) shapes each context-attention shard sees."""
    seen = []
    local = ca._local

    def spy(q, k, v, valid, axis, causal):
        seen.append((q.shape, jax.lax.all_gather(k, axis, axis=1, tiled=True).shape))
        return local(q, k, v, valid, axis, causal)

    monkeypatch.setattr(ca, "_local", spy)
    return seen


@functools.lru_cache(maxsize=None)
def _one_device(cfg: ModelConfig):
    """(initial params, (loss, grads)) of `cfg` on one device, for the first batch."""
    params = _params(cfg)
    mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:1])
    return params, _loss_grads(cfg, mesh, params, _batches(n=1)[0])


@dataclasses.dataclass(frozen=True)
class SliceDevice:
    """A CPU device presented as part of a slice (CPU devices carry no slice_index)."""
    device: jax.Device
    slice_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def _two_slices(mesh_cfg: MeshConfig) -> Mesh:
    """The 8 CPU devices as 2 slices (slice 0 = devices 4..7: the layout must follow slices,
    not device order), laid out by the multi-slice path."""
    stand_ins = [SliceDevice(d, 1 - i // 4) for i, d in enumerate(jax.devices())]
    grid = sharding.hybrid_device_grid(mesh_cfg, stand_ins)
    assert {s.slice_index for s in grid[: grid.shape[0] // 2].flat} == {0}
    return Mesh(np.vectorize(lambda s: s.device)(grid), sharding.MESH_AXES)


@pytest.mark.parametrize("name,cfg,mesh_cfg,slices", [
    ("learned positions, context=2 x fsdp=2 x tensor=2", GPT,
     MeshConfig(data=1, fsdp=2, context=2, tensor=2), False),
    ("rope + GQA + remat + scan, context=4 x data=2",
     dataclasses.replace(ROPE_GQA, remat="full", scan_layers=True), MeshConfig(data=2, context=4),
     False),
    ("2 slices: dcn_data=2 x fsdp=2 x tensor=2", GPT,
     MeshConfig(data=1, fsdp=2, tensor=2, dcn_data=2), True),
])
def test_loss_and_grads_equal_one_device(kernel_shapes, name, cfg, mesh_cfg, slices):
    """The train step's loss and gradients (Adam's input) against one device's."""
    batch = _batches(n=1)[0]  # row 0 half padded: the loss mask crosses a shard boundary
    plain = dataclasses.replace(cfg, remat="none", scan_layers=False)
    params, want = _one_device(plain)
    if cfg.scan_layers:
        params = stack_layers(params, cfg.n_layers)
        want = (want[0], stack_layers(want[1], cfg.n_layers))
    mesh = _two_slices(mesh_cfg) if slices else sharding.make_mesh(mesh_cfg)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    assert dp * mesh_cfg.context * mesh_cfg.tensor == 8
    _assert_close(_loss_grads(cfg, mesh, params, batch), want)
    if mesh_cfg.context > 1:  # each shard attends with its slice of queries against all keys
        c, tp = mesh_cfg.context, mesh_cfg.tensor
        n, k = cfg.n_heads // tp, (cfg.n_kv_heads or cfg.n_heads) // tp
        assert ((BATCH // dp, SEQ // c, n, 8), (BATCH // dp, SEQ, k, 8)) in kernel_shapes
    else:
        assert not kernel_shapes


@pytest.mark.parametrize("causal", [True, False])
def test_context_attention_matches_dot_product_attention(causal):
    """With key padding (the encoder's case) and without; context=8: one query per shard pair."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, SEQ, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, SEQ, 2, 8)), jnp.float32) for _ in range(2))
    valid = np.ones((2, SEQ), bool)
    valid[1, 5:] = False
    want = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(valid)[:, None, None, :],
                                        is_causal=causal)
    mesh = sharding.make_mesh(MeshConfig(data=1, context=8))

    def fn(q, k, v, valid):
        with sharding.activation_mesh(mesh):
            return ca.context_attention(q, k, v, causal=causal, valid_bt=valid)

    on_mesh = jax.device_put((q, k, v, jnp.asarray(valid)), sharding.replicated(mesh))
    got = jax.jit(fn)(*on_mesh)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
