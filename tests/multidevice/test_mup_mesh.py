"""μP's per-group learning rates under an FSDP + tensor-parallel mesh of 8 fake CPU devices:
each leaf's first Adam step is its group's factor times the plain step, and the state keeps
the shardings of the plain optimizer's."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlm import sharding
from jaxlm.config import MeshConfig, ModelConfig, OptimConfig
from jaxlm.models import build_model
from jaxlm.train.optim import build_optimizer, schedule
from jaxlm.train.param_groups import group_labels, lr_multipliers
from jaxlm.train.state import init_state, state_shardings
from jaxlm.train.step import compile_steps

SEQ, VOCAB = 16, 64
MUP = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=4, max_seq_len=SEQ,
                  tie_embeddings=False, mup_base_width=8)  # width mult 4: hidden lr / 4
OPTIM = OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant")


def _batch(mesh):
    rows = (np.random.default_rng(0).integers(0, VOCAB, (8, 1)) + np.arange(SEQ + 1)) % VOCAB
    batch = {"inputs": rows[:, :-1].astype(np.int32), "targets": rows[:, 1:].astype(np.int32),
             "mask": np.ones((8, SEQ), bool)}
    return jax.device_put(batch, sharding.batch_sharding(mesh))


def test_per_group_lrs_reach_their_leaves_on_fsdp_tp_mesh():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
    mult = lr_multipliers(MUP)
    model = build_model(MUP)
    plain_opt, mup_opt = build_optimizer(OPTIM, 4), build_optimizer(OPTIM, 4, group_lr=mult)
    state, shardings = init_state(model, plain_opt, seed=0, seq_len=SEQ, mesh=mesh)
    assert state_shardings(model, mup_opt, SEQ, mesh)[1] == shardings  # μP shards as SP
    p0 = jax.device_get(state.params)
    twin = jax.device_put(jax.device_get(state), shardings)  # a step donates its state
    lr = schedule(OPTIM, 4)
    plain, plain_m = compile_steps(model, plain_opt, lr, shardings, mesh)[0](state, _batch(mesh))
    mup, mup_m = compile_steps(model, mup_opt, lr, shardings, mesh)[0](twin, _batch(mesh))
    q = mup.params["h_0"]["attn"]["query"]["kernel"]
    assert q.sharding.spec == shardings.params["h_0"]["attn"]["query"]["kernel"].spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.size == q.size // 4
    seen = set()
    for path, group in jax.tree_util.tree_leaves_with_path(group_labels(p0)):
        d_plain = _leaf(jax.device_get(plain.params), path) - _leaf(p0, path)
        d_mup = _leaf(jax.device_get(mup.params), path) - _leaf(p0, path)
        np.testing.assert_allclose(d_mup, mult[group] * d_plain, rtol=1e-4, atol=1e-9,
                                   err_msg=jax.tree_util.keystr(path))
        seen.add(group)
    assert seen == {"embedding", "hidden", "output", "vector"}
    assert float(mup_m["update_ratio/hidden"]) == pytest.approx(
        float(plain_m["update_ratio/hidden"]) / 4, rel=1e-3)


def _leaf(tree, path):
    for k in path:
        tree = tree[k.key]
    return np.asarray(tree)
