"""The same training on different meshes of 8 fake CPU devices: equal losses, real shards."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxlm import sharding, xla_flags
from jaxlm.config import MeshConfig, ModelConfig, OptimConfig
from jaxlm.models import build_model
from jaxlm.models.transformer import stack_layers
from jaxlm.train.optim import build_optimizer, schedule
from jaxlm.train.state import TrainState, init_state, state_shardings
from jaxlm.train.step import compile_steps

STEPS, BATCH, SEQ, VOCAB = 20, 8, 16, 256

GPT = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=SEQ)
LSTM = ModelConfig(family="lstm", vocab_size=VOCAB, d_model=32, n_layers=2, max_seq_len=SEQ,
                   tie_embeddings=False)
OPTIM = OptimConfig(lr=3e-3, warmup_steps=2)
LSTM_OPTIM = OptimConfig(lr=3e-2, warmup_steps=2)  # the LSTM plateaus longer at the same rate

MESHES = {
    "1 device": (MeshConfig(data=1), 1),
    "data=8": (MeshConfig(data=8), 8),
    "fsdp=8": (MeshConfig(data=1, fsdp=8), 8),
    "data=2,fsdp=2,tensor=2": (MeshConfig(data=2, fsdp=2, tensor=2), 8),
}


def test_eight_devices():
    assert jax.device_count() == 8


def test_cpu_device_split_uses_the_devices_that_divide_the_batch(monkeypatch):
    """jaxlm's one-device-per-core CPU split (xla_flags) under the default mesh trains on the
    most devices that divide the (micro)batch; a mesh the user set is theirs."""
    monkeypatch.setenv(xla_flags.CPU_DEVICES_ADDED_ENV, "8")
    default = MeshConfig()
    assert sharding.devices_for_batch(default, 16) is None  # all 8
    for rows, used in ((6, 6), (3, 3), (7, 7), (9, 3), (1, 1)):
        assert sharding.devices_for_batch(default, rows) == jax.devices()[:used]
    mesh = sharding.make_mesh(default, sharding.devices_for_batch(default, 6))
    assert sharding.data_parallel_size(mesh) == 6
    assert sharding.devices_for_batch(MeshConfig(data=8), 6) is None
    monkeypatch.setenv(xla_flags.CPU_DEVICES_ADDED_ENV, "4")  # not the split JAX started with
    assert sharding.devices_for_batch(default, 6) is None
    monkeypatch.delenv(xla_flags.CPU_DEVICES_ADDED_ENV)  # the user's own 8 devices
    assert sharding.devices_for_batch(default, 6) is None


def _batches(n: int = STEPS, batch: int = BATCH, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Learnable synthetic rows: a random start then +1 steps (mod vocab), some rows padded."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = rng.integers(0, VOCAB, size=(batch, 1))
        rows = (start + np.arange(SEQ + 1)) % VOCAB
        mask = np.ones((batch, SEQ), bool)
        mask[0, SEQ // 2:] = False
        out.append({"inputs": rows[:, :-1].astype(np.int32),
                    "targets": rows[:, 1:].astype(np.int32), "mask": mask})
    return out


def _setup(cfg: ModelConfig, mesh_cfg: MeshConfig, n_devices: int, grad_accum: int = 1,
           params=None):
    mesh = sharding.make_mesh(mesh_cfg, jax.devices()[:n_devices])
    model = build_model(cfg)
    optim = LSTM_OPTIM if cfg.family == "lstm" else OPTIM
    opt = build_optimizer(optim, STEPS)
    state, shardings = init_state(model, opt, seed=0, seq_len=SEQ, mesh=mesh)
    if params is not None:  # start from given (e.g. restacked) parameters
        params = jax.device_put(params, shardings.params)
        state = TrainState(step=state.step, params=params, opt_state=opt.init(params),
                           rng=state.rng)
        state = jax.device_put(state, shardings)
    train_step, _ = compile_steps(model, opt, schedule(optim, STEPS), shardings, mesh,
                                  grad_accum=grad_accum)
    return mesh, state, shardings, train_step


def _train(cfg: ModelConfig, mesh_cfg: MeshConfig, n_devices: int, grad_accum: int = 1,
           params=None, batches=None):
    mesh, state, _, train_step = _setup(cfg, mesh_cfg, n_devices, grad_accum, params)
    batch_sh = sharding.batch_sharding(mesh)
    losses = []
    for b in batches or _batches():
        state, metrics = train_step(state, {k: jax.device_put(v, batch_sh) for k, v in b.items()})
        losses.append(metrics["loss"])
    return np.asarray(jax.device_get(losses)), jax.device_get(state.params)


@pytest.fixture(scope="module")
def runs():
    return {(fam, name): _train(cfg, *MESHES[name])
            for fam, cfg in (("transformer", GPT), ("lstm", LSTM)) for name in MESHES}


@pytest.mark.parametrize("family", ["transformer", "lstm"])
@pytest.mark.parametrize("name", [n for n in MESHES if n != "1 device"])
def test_same_losses_on_every_mesh(runs, family, name):
    base, _ = runs[(family, "1 device")]
    losses, _ = runs[(family, name)]
    assert base[-1] < base[0] - 0.3, f"the run must learn something: {base}"
    np.testing.assert_allclose(losses, base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_same_final_params_on_every_mesh(runs, family):
    _, base = runs[(family, "1 device")]
    for name in MESHES:
        _, params = runs[(family, name)]
        # 20 Adam steps (the LSTM at lr 3e-2) let float rounding grow a little past 1e-5
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=0), params, base)


# ---------------------------------------------------------------------------------------------
# what each device holds

# The rules table applied to each parameter (mesh axes of size 1 stay in the spec, harmlessly).
EXPECTED_SPECS = {
    ("wte", "embedding"): P("tensor", "fsdp"),  # (vocab, embed)
    ("wpe",): P(None, "fsdp"),
    ("h_0", "attn", "query", "kernel"): P("fsdp", "tensor", None),  # (embed, heads, head_dim)
    ("h_0", "attn", "query", "bias"): P("tensor", None),
    ("h_0", "attn", "key", "kernel"): P("fsdp", "tensor", None),
    ("h_0", "attn", "out", "kernel"): P("tensor", None, "fsdp"),  # (heads, head_dim, embed)
    ("h_0", "mlp", "up", "kernel"): P("fsdp", "tensor"),  # (embed, mlp)
    ("h_0", "mlp", "up", "bias"): P("tensor"),
    ("h_0", "mlp", "down", "kernel"): P("tensor", "fsdp"),  # (mlp, embed)
    ("h_0", "ln_1", "norm", "scale"): P("fsdp"),
}


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize("mesh_name", ["fsdp=8", "data=2,fsdp=2,tensor=2"])
def test_partition_specs(mesh_name):
    _, state, shardings, _ = _setup(GPT, *MESHES[mesh_name])
    for path, spec in EXPECTED_SPECS.items():
        got = _leaf(shardings.params, path).spec
        assert got == spec, f"{'/'.join(path)}: {got} != {spec}"
        # Adam's moments are sharded exactly like their parameter
        for moment in ("mu", "nu"):
            m_sh = _leaf(getattr(_adam_state(shardings.opt_state), moment), path)
            assert m_sh.spec == spec, f"{moment} of {'/'.join(path)}: {m_sh.spec}"


def _adam_state(opt_state):
    """The ScaleByAdamState inside the optax chain."""
    for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu")):
        if hasattr(leaf, "mu"):
            return leaf
    raise AssertionError("no Adam state in the optimizer state")


def test_fsdp8_each_device_holds_an_eighth():
    _, state, _, _ = _setup(GPT, *MESHES["fsdp=8"])
    checked = 0
    trees = {"params": state.params, "mu": _adam_state(state.opt_state).mu,
             "nu": _adam_state(state.opt_state).nu}
    for name, tree in trees.items():
        for path, x in jax.tree_util.tree_leaves_with_path(tree):
            if x.size < 256:
                continue  # small vectors (biases, norms) may stay whole
            shards = x.addressable_shards
            assert len(shards) == 8
            for s in shards:
                assert s.data.size * 8 == x.size, f"{name} {jax.tree_util.keystr(path)}: " \
                    f"shard {s.data.shape} of {x.shape}"
            checked += 1
    assert checked >= 3 * 14  # 7 matrices per block x 2 blocks, + wte, wpe


def test_lstm_shards_its_gates_over_tensor():
    _, state, shardings, _ = _setup(LSTM, *MESHES["data=2,fsdp=2,tensor=2"])
    layer = shardings.params["lstm_0"]
    assert layer["w_ih"].spec == P("fsdp", "tensor")
    assert layer["w_hh"].spec == P("fsdp", "tensor")
    assert layer["b_ih"].spec == P("tensor")
    w = state.params["lstm_0"]["w_ih"]
    assert {s.data.shape for s in w.addressable_shards} == {(32 // 2, 4 * 32 // 2)}


# ---------------------------------------------------------------------------------------------
# scaling knobs


@pytest.mark.parametrize("family,cfg", [("transformer", GPT), ("lstm", LSTM)])
def test_grad_accumulation_equals_one_big_batch(family, cfg):
    mesh_cfg, n = MESHES["data=2,fsdp=2,tensor=2"]
    big = _batches(n=3, batch=4 * BATCH, seed=1)
    one, p_one = _train(cfg, mesh_cfg, n, grad_accum=1, batches=big)
    acc, p_acc = _train(cfg, mesh_cfg, n, grad_accum=4, batches=big)
    np.testing.assert_allclose(acc, one, atol=1e-6, rtol=0)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p_acc), jax.tree.leaves(p_one)):
        if "'key']['bias']" in jax.tree_util.keystr(path):
            # softmax ignores a per-query shift of the scores, so the key bias's gradient is 0 in
            # exact arithmetic: Adam normalizes the rounding noise, and the bias stays near 0 in
            # both runs with noise of its own (about 1e-6, varying with the XLA version)
            assert np.abs(a).max() < 1e-5 and np.abs(b).max() < 1e-5, jax.tree_util.keystr(path)
            continue
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_and_scan_give_the_same_losses(runs, remat, scan):
    base, _ = runs[("transformer", "1 device")]
    mesh_cfg, n = MESHES["data=2,fsdp=2,tensor=2"]
    cfg = dataclasses.replace(GPT, remat=remat, scan_layers=scan)
    params = None
    if scan:  # the plain model's initial params, stacked: the same model
        _, state, _, _ = _setup(GPT, *MESHES["1 device"])
        params = stack_layers(jax.device_get(state.params), GPT.n_layers)
    losses, _ = _train(cfg, mesh_cfg, n, params=params)
    np.testing.assert_allclose(losses, base, atol=1e-5, rtol=0)


def test_scan_layers_stacks_params_on_a_replicated_layers_axis():
    cfg = dataclasses.replace(GPT, scan_layers=True)
    mesh = sharding.make_mesh(MESHES["fsdp=8"][0])
    model = build_model(cfg)
    abstract, shardings = state_shardings(model, build_optimizer(OPTIM, STEPS), SEQ, mesh)
    q = abstract.params["h"]["attn"]["query"]["kernel"]
    assert q.shape == (GPT.n_layers, 32, 4, 8)
    assert shardings.params["h"]["attn"]["query"]["kernel"].spec == P(None, "fsdp", "tensor", None)


def test_bfloat16_compute_float32_params(runs):
    cfg = dataclasses.replace(GPT, dtype="bfloat16")
    losses, params = _train(cfg, *MESHES["data=2,fsdp=2,tensor=2"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    base, _ = runs[("transformer", "data=2,fsdp=2,tensor=2")]  # float32, the same mesh
    assert np.isfinite(losses).all()
    # bf16 rounding moves the curve a little, not a lot
    np.testing.assert_allclose(losses, base, atol=0.1)


def test_splash_attention_under_shard_map(monkeypatch):
    """model.attention_impl=splash (the Pallas kernel, interpreted on CPU) runs per shard under
    shard_map on a 3-axis mesh and trains like XLA attention. (Splash blocks are multiples of 128
    tokens, so this model sees 128.)"""
    t = 128
    gpt = dataclasses.replace(GPT, max_seq_len=t, n_layers=1)
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    rows = (np.random.default_rng(0).integers(0, VOCAB, (BATCH, 1)) + np.arange(t + 1)) % VOCAB
    batch = {"inputs": rows[:, :-1].astype(np.int32), "targets": rows[:, 1:].astype(np.int32),
             "mask": np.ones((BATCH, t), bool)}
    from jaxlm.models import attention

    seen = []  # the (b, t, n, h) query shapes the kernel gets: per shard under shard_map
    local = attention._splash_local
    monkeypatch.setattr(attention, "_splash_local",
                        lambda q, *a: seen.append(q.shape) or local(q, *a))
    losses = {}
    for impl in ("xla", "splash"):
        model = build_model(dataclasses.replace(gpt, attention_impl=impl))
        opt = build_optimizer(OPTIM, STEPS)
        state, shardings = init_state(model, opt, seed=0, seq_len=t, mesh=mesh)
        step, _ = compile_steps(model, opt, schedule(OPTIM, STEPS), shardings, mesh)
        placed = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}
        out = []
        for _ in range(2):
            state, metrics = step(state, placed)
            out.append(float(metrics["loss"]))
        losses[impl] = out
    np.testing.assert_allclose(losses["splash"], losses["xla"], atol=1e-5)
    # the step's kernel sees one shard: batch / (data*fsdp), heads / tensor (init sees b=1)
    assert (BATCH // 4, t, gpt.n_heads // 2, gpt.d_model // gpt.n_heads) in seen
