"""Shared by the benchmark scripts: the jaxlm training setup (as `jaxlm.train.loop.train` builds
it), the run environment line, peak memory, and appending a section to RESULTS.md."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import platform
import resource
import shlex
import sys
import time
from importlib import metadata
from typing import Any, Callable, NamedTuple

from jaxlm import xla_flags
from jaxlm.cli.process import keep_freed_memory

from load import LIMIT_CORES, RUN_LIMIT_CORES, LoadMeter

# the benchmarks measure jaxlm as its runs are set up (not on import): the scripts that time
# training steps get what `jaxlm train` gives a Transformer on a CPU-only machine, one device per
# core (bench_train runs its LSTM rows with JAXLM_CPU_DEVICES=1, as `jaxlm train` does), and
# every script gets a jaxlm command's malloc settings (a PyTorch baseline in the same process
# shares them)
TRAINING_SCRIPTS = ("bench_train.py", "bench_vs_torch.py", "profile_step.py", "bench_dense.py")
xla_flags.apply_defaults(training=pathlib.Path(sys.argv[0]).name in TRAINING_SCRIPTS)
keep_freed_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxlm import config as config_lib, sharding  # noqa: E402
from jaxlm.config import RunConfig, is_causal  # noqa: E402
from jaxlm.models import build_model  # noqa: E402
from jaxlm.train.optim import build_optimizer, schedule  # noqa: E402
from jaxlm.train.state import init_state, state_shardings  # noqa: E402
from jaxlm.train.step import compile_steps  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


class Setup(NamedTuple):
    model: Any
    state: Any  # the initialized TrainState (donated by train_step)
    train_step: Callable  # jitted (state, batch) -> (state, metrics)
    batch_sharding: jax.sharding.NamedSharding
    lr_schedule: Any
    mesh: jax.sharding.Mesh


def compute_dtype(cfg: RunConfig) -> str:
    """model.dtype with `auto` resolved for this platform."""
    resolve = getattr(config_lib, "compute_dtype", None)  # jaxlm versions with model.dtype=auto
    return resolve(cfg.model.dtype, jax.devices()[0].platform) if resolve else cfg.model.dtype


def attention_impl(cfg: RunConfig) -> str:
    """The attention implementation the training loop would run this config with."""
    m = cfg.model
    if m.family != "transformer":
        return "-"
    try:
        from jaxlm.models import attention
    except ImportError:  # a jaxlm without kernel dispatch: jax.nn.dot_product_attention chooses
        return m.attention_impl if m.attention_impl != "auto" else "xla"
    impl, warning = attention.resolve(
        m.attention_impl, platform=jax.devices()[0].platform, dtype=compute_dtype(cfg),
        n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads or m.n_heads, head_dim=m.d_model // m.n_heads,
        seq_len=cfg.data.seq_len, causal=is_causal(m))
    if warning:
        print(warning, file=sys.stderr)
    return impl


def build(cfg: RunConfig) -> Setup:
    """Model, optimizer, sharded state and the jitted train step, the way the training loop
    builds them (`cfg.model.vocab_size` must be set; attention as `attention_impl` resolves)."""
    mesh = sharding.make_mesh(cfg.mesh, sharding.devices_for_batch(
        cfg.mesh, cfg.train.batch_size // cfg.train.grad_accum))
    impl = attention_impl(cfg)
    model = build_model(cfg.model if impl == "-" else
                        dataclasses.replace(cfg.model, attention_impl=impl))
    optimizer = build_optimizer(cfg.optim, cfg.train.steps)
    lr_schedule = schedule(cfg.optim, cfg.train.steps)
    _, shardings = state_shardings(model, optimizer, cfg.data.seq_len, mesh)
    train_step, _ = compile_steps(model, optimizer, lr_schedule, shardings, mesh,
                                  grad_accum=cfg.train.grad_accum)
    state, _ = init_state(model, optimizer, seed=cfg.train.seed, seq_len=cfg.data.seq_len,
                          mesh=mesh)
    return Setup(model, state, train_step, sharding.batch_sharding(mesh), lr_schedule, mesh)


def byte_config(overrides: list[str]) -> RunConfig:
    """The quickstart config with `overrides`, 100 steps (10 warm-up), byte-token vocabulary."""
    from jaxlm.data.tokenizers import ByteTokenizer

    cfg = config_lib.load_config(None, ["train.steps=100", "optim.warmup_steps=10", *overrides])
    return config_lib.replace(cfg, **{"model.vocab_size": ByteTokenizer().vocab_size})


def random_batches(cfg: RunConfig, vocab: int, n: int = 2, seed: int = 0) -> list[dict]:
    """`n` host batches of random tokens for cfg's batch and sequence shape."""
    b, t = cfg.train.batch_size, cfg.data.seq_len
    rng = np.random.default_rng(seed)
    return [{"inputs": rng.integers(0, vocab, (b, t), dtype=np.int32),
             "targets": rng.integers(0, vocab, (b, t), dtype=np.int32),
             "mask": np.ones((b, t), bool)} for _ in range(n)]


def alternate_steps(setups: dict[str, Setup], data: list[dict], rounds: int, steps: int,
                    meter: LoadMeter) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Times `steps` train steps per round of each setup, the setups alternating within every
    round, on the same batches (each step waits for its loss). Returns per setup the seconds per
    step of each round and every step's loss; the first step (the compile) is untimed."""
    runs = {}
    for name, s in setups.items():
        batches = [jax.device_put(x, s.batch_sharding) for x in data]
        state, m = s.train_step(s.state, batches[0])  # traced and compiled now
        float(m["loss"])
        runs[name] = [s.train_step, state, batches]
    times: dict[str, list[float]] = {k: [] for k in runs}
    losses: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            with meter.timed():
                for i in range(steps):
                    run[1], m = run[0](run[1], run[2][i % len(data)])
                    losses[name].append(float(m["loss"]))
            times[name].append((time.perf_counter() - t0) / steps)
    return times, losses


def versions(*extra: str) -> str:
    """'jax 0.x, jaxlib 0.x, flax 0.x, ...' for the installed packages named."""
    out = []
    for name in ("jax", "jaxlib", "flax", "optax", *extra):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def device_line() -> str:
    devs = jax.devices()
    host = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{len(devs)}x {devs[0].device_kind} ({devs[0].platform}; host {host})"


def peak_memory() -> tuple[float, str]:
    """(peak bytes, what was measured): the largest device's peak_bytes_in_use on accelerators,
    the process's max RSS on CPU (which includes the host-side Python and compiler)."""
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return max(d.memory_stats()["peak_bytes_in_use"] for d in jax.local_devices()), \
            "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "process max RSS"


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT),
                                                          *sys.argv[1:]])


def append_results(title: str, body: str, *extra_packages: str, meter: LoadMeter) -> None:
    """Appends '## date — title' with device, versions, the command, the other processes' CPU
    use during the timed runs (`meter`) and `body` to RESULTS.md; refuses (exit 3, nothing
    written) when other processes used more than load.LIMIT_CORES during any timed run."""
    if not meter.quiet():
        sys.exit(f"not appending to {RESULTS.name}: {meter.line()}; a quiet machine allows "
                 f"{LIMIT_CORES} cores altogether and {RUN_LIMIT_CORES} in any run; re-run when "
                 "the machine is quiet")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(RESULTS, "a") as f:
        f.write(f"\n## {now[:10]} — {title}\n\n{now}; {device_line()}; "
                f"{versions(*extra_packages)}; {meter.line()}. Command: `{command()}`\n\n"
                f"{body.rstrip()}\n")
