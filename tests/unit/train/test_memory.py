"""jaxlm.train.memory: a state or a step that cannot fit is refused before allocation, with the
numbers; one close to the limit is warned about (issue 21.9)."""

from __future__ import annotations

import types

import jax
import optax
import pytest

from jaxlm import sharding
from jaxlm.config import MeshConfig, ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model
from jaxlm.train import memory
from jaxlm.train.state import state_shardings
from jaxlm.train.step import abstract_batch, compile_steps

MODEL = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, max_seq_len=32)


@pytest.fixture(scope="module")
def tiny():
    mesh = sharding.make_mesh(MeshConfig())
    model = build_model(MODEL)
    optimizer = optax.adamw(1e-3)
    abstract, shardings = state_shardings(model, optimizer, 32, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    train_step, _ = compile_steps(model, optimizer, optax.constant_schedule(1e-3), shardings,
                                  mesh)
    return types.SimpleNamespace(mesh=mesh, abstract=abstract, shardings=shardings,
                                 n_params=n_params, train_step=train_step)


def test_state_bytes_are_params_and_optimizer_state(tiny):
    need = memory.check_state(tiny.abstract, tiny.shardings, tiny.n_params, "cpu",
                              budget=(2**40, "a big device"))
    # float32 params, AdamW's two moments of the same shapes, a few scalars
    assert 3 * 4 * tiny.n_params <= need < 3 * 4 * tiny.n_params + 1024


def test_a_state_that_cannot_fit_is_refused_with_the_numbers(tiny):
    with pytest.raises(JaxlmError) as e:
        memory.check_state(tiny.abstract, tiny.shardings, tiny.n_params, "gpu",
                           budget=(10_000, "each test device's memory"))
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{tiny.n_params:,} parameters" in msg and "MiB per device" in msg
    assert "more than each test device's memory (0.00954 MiB)" in msg
    assert "model.d_model" in msg and "mesh.fsdp" in msg


def test_close_to_the_limit_warns(tiny):
    need = memory.state_bytes(tiny.abstract, tiny.shardings)
    warned = []
    memory.check_state(tiny.abstract, tiny.shardings, tiny.n_params, "cpu", warned.append,
                       budget=(int(need / 0.95), "the host's RAM"))
    assert len(warned) == 1 and warned[0].startswith("jaxlm: warning: ") and "95%" in warned[0]
    warned.clear()
    memory.check_state(tiny.abstract, tiny.shardings, tiny.n_params, "cpu", warned.append,
                       budget=(10 * need, "the host's RAM"))
    assert warned == []


def test_a_step_that_cannot_fit_is_refused(tiny):
    batch = abstract_batch(tiny.mesh, "clm", 4, 32)
    need = memory.check_step(tiny.train_step, tiny.abstract, tiny.shardings, batch, prefetch=2,
                             budget=(2**40, "a big device"))
    assert need > memory.state_bytes(tiny.abstract, tiny.shardings)  # + gradients, activations
    big = abstract_batch(tiny.mesh, "clm", 4096, 32)
    with pytest.raises(JaxlmError, match=r"one train step .* needs .* per device, more than "
                                         r"a small device .*train\.batch_size"):
        memory.check_step(tiny.train_step, tiny.abstract, tiny.shardings, big, prefetch=2,
                          budget=(need * 2, "a small device"))


def test_cpu_devices_share_the_hosts_memory(monkeypatch):
    cpu = types.SimpleNamespace(platform="cpu", device_kind="cpu", memory_stats=lambda: None)
    monkeypatch.setattr(memory, "host_memory", lambda: 64 * 2**30)
    assert memory.device_budget([cpu]) == (64 * 2**30, "the host's RAM")
    have, where = memory.device_budget([cpu] * 8)
    assert (have, where) == (8 * 2**30, "a share of the host's 64 GiB of RAM over 8 CPU devices")
    gpu = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H200",
                                memory_stats=lambda: {"bytes_limit": 100 * 2**30})
    assert memory.device_budget([gpu]) == (100 * 2**30, "each NVIDIA H200's memory")
    unknown = types.SimpleNamespace(platform="tpu", device_kind="TPU x", memory_stats=lambda: {})
    assert memory.device_budget([unknown]) is None
    assert memory.device_budget() is not None  # this machine's


def test_no_analysis_or_check_off(tiny, monkeypatch):
    assert memory.compiled_bytes(types.SimpleNamespace(memory_analysis=lambda: None)) is None

    def broken():
        raise NotImplementedError

    assert memory.compiled_bytes(types.SimpleNamespace(memory_analysis=broken)) is None
    monkeypatch.setenv(memory.SKIP_ENV, "0")
    memory.check_state(tiny.abstract, tiny.shardings, tiny.n_params, "cpu", budget=(1, "x"))
    assert memory.check_step(tiny.train_step, tiny.abstract, tiny.shardings,
                             abstract_batch(tiny.mesh, "clm", 4, 32), 2, budget=(1, "x")) is None


def test_a_containers_memory_limit_counts_when_lower(tmp_path, monkeypatch):
    """A container (Docker, Kubernetes, a SLURM job) may allow far less than the host's RAM."""
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")  # v2: no limit
    v1.write_text(f"{2**63 - 4096}\n")  # v1: "no limit"
    assert memory._cgroup_limit((str(v2), str(v1))) is None
    v2.write_text(f"{4 * 2**30}\n")
    assert memory._cgroup_limit((str(v2), str(v1))) == 4 * 2**30
    monkeypatch.setattr(memory, "_cgroup_limit", lambda: 4 * 2**30)
    assert memory.host_memory() == min(4 * 2**30, memory.os.sysconf("SC_PAGE_SIZE")
                                       * memory.os.sysconf("SC_PHYS_PAGES"))
