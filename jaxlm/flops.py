"""The one FLOP counter: parameter counts, FLOPs per token, accelerator peaks and MFU.

Two conventions, both per token of training (forward + backward = 3x forward):

- **Scaling** (`flops_per_token`; Kaplan et al. 2020 / Chinchilla practice, what sweeps budget
  with): 6 * N_nonembed + 6 * n_layers * seq_len * d_model. Embeddings and the output head are
  excluded from N; the attention term is Kaplan's (QK^T over the causal context).
- **Model FLOPs** (`model_flops_per_token`; PaLM, Chowdhery et al. 2022, appendix B, what MFU is
  measured with): 6 * N_matmul + 12 * n_layers * seq_len * d_attn, where N_matmul is every weight
  used in a matmul (N_nonembed plus the d_model x vocab output projection, tied or not; the
  embedding lookup is a gather and costs nothing) and the attention term counts QK^T and AV over
  the full (not causally halved) context. LSTM: 6 * N_matmul, no attention term.

MFU = achieved model FLOP/s / peak FLOP/s of the devices used. Peaks are dense bf16 (and fp32
where the vendor gives one) per chip from vendor data sheets; `train.peak_flops` overrides them.
On CPU there is no data sheet: `matmul_roof` times a large float32 matmul, and CPU MFU is
relative to that measured roof. One measurement varies by 2-3x with the machine's load, so it is
made once per machine and cached (`machine_roof`: $XDG_CACHE_HOME/jaxlm/matmul_roof.json, keyed
by device, CPU model, cores and jax version); JAXLM_REMEASURE_ROOF=1 measures it again. MFU of
runs on one machine is then measured against the same number, which every run reports with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Optional

import numpy as np
from flax.traverse_util import flatten_dict

from jaxlm import xla_flags
from jaxlm.config import ModelConfig
from jaxlm.paths import cpu_model, user_cache_dir

EMBEDDING_PARAMS = ("wte", "wpe", "embed", "lm_head", "head")

# Dense (no sparsity) peak FLOP/s per chip. "float32" on NVIDIA is the TF32 tensor-core rate,
# which XLA uses for float32 matmuls by default (jax_default_matmul_precision).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Google Cloud TPU system architecture pages (per chip)
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},  # v5e
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v5": {"bfloat16": 459e12, "float32": 459e12},  # v5p reports itself as "TPU v5"
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12},  # v6e (Trillium)
    "TPU v6e": {"bfloat16": 918e12, "float32": 918e12},
    # NVIDIA data sheets, dense tensor-core rates (SXM parts; PCIe H100 is lower)
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA A100 80GB PCIe": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 495e12},
    "NVIDIA H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 495e12},
}
# device_kind prefixes, for names the table does not spell exactly (e.g. "NVIDIA H100 NVL")
_PREFIXES = (("TPU v6", "TPU v6e"), ("TPU v5 lite", "TPU v5e"), ("TPU v5", "TPU v5p"),
             ("TPU v4", "TPU v4"), ("NVIDIA H200", "NVIDIA H200"),
             ("NVIDIA H100", "NVIDIA H100 80GB HBM3"), ("NVIDIA A100", "NVIDIA A100-SXM4-80GB"))


def param_counts(params: Any) -> tuple[int, int]:
    """(total, non-embedding): embeddings, learned positions and the output head excluded."""
    total = non_embed = 0
    for path, leaf in flatten_dict(params).items():
        n = int(leaf.size)
        total += n
        if path[0] not in EMBEDDING_PARAMS:
            non_embed += n
    return total, non_embed


def flops_per_token(cfg: ModelConfig, non_embedding_params: int, seq_len: int) -> float:
    """Training FLOPs per token, scaling convention (6N + Kaplan's attention term)."""
    flops = 6.0 * non_embedding_params
    if cfg.family == "transformer":
        flops += 6.0 * cfg.n_layers * seq_len * cfg.d_model
    return flops


def model_flops_per_token(cfg: ModelConfig, non_embedding_params: int, seq_len: int) -> float:
    """Training FLOPs per token, PaLM's model-FLOPs convention (for MFU); see the module doc.

    Needs `cfg.vocab_size` resolved. d_attn = n_heads * head_dim (= d_model here)."""
    if cfg.vocab_size is None:
        raise ValueError("model_flops_per_token needs model.vocab_size")
    matmul_params = non_embedding_params
    if cfg.objective != "classify":  # the LM head: d_model x vocab, tied or not
        matmul_params += cfg.d_model * cfg.vocab_size
    flops = 6.0 * matmul_params
    if cfg.family == "transformer":
        flops += 12.0 * cfg.n_layers * seq_len * cfg.d_model
    return flops


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> Optional[float]:
    """Peak FLOP/s of one chip for matmuls in `dtype` (float16 counts as bfloat16); None when
    the device is not in the table (CPUs, unknown accelerators)."""
    row = PEAK_FLOPS.get(device_kind)
    if row is None:
        for prefix, name in _PREFIXES:
            if device_kind.startswith(prefix):
                row = PEAK_FLOPS[name]
                break
    if row is None:
        return None
    return row["float32" if dtype == "float32" else "bfloat16"]


@functools.lru_cache(maxsize=None)
def matmul_roof(n: int = 1024, repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n float32 matmul (best of `repeats`): the CPU's practical peak,
    so CPU runs have an MFU too. On the single-threaded CPU devices of jaxlm's CPU split, one
    matmul per device at once (their sum: the cores' roof together). ~0.2 s on CPU."""
    import jax
    import jax.numpy as jnp

    k = _roof_devices()
    a = jax.random.normal(jax.random.key(0), (k, n, n), jnp.float32)
    if k > 1:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:k]), ("devices",))
        a = jax.device_put(a, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
            "devices")))
    mm = jax.jit(lambda x: x @ x)  # batched: device i multiplies its own matrix
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return k * 2.0 * n**3 / best


def _roof_devices() -> int:
    """How many devices the roof runs on at once: the single-threaded CPU devices (one per
    core at most), else one."""
    import jax

    if not xla_flags.single_threaded_cpu() or jax.devices()[0].platform != "cpu":
        return 1
    return max(1, min(jax.device_count(), xla_flags.usable_cores()))


REMEASURE_ENV = "JAXLM_REMEASURE_ROOF"  # "1": measure the roof again, replace the cached one
ROOF_CACHE_FILE = "matmul_roof.json"


@dataclasses.dataclass(frozen=True)
class Roof:
    flops: float  # FLOP/s of one n x n float32 matmul, best of the repeats
    measured: str  # when (UTC, ISO 8601)
    cached: bool  # read from the cache, not measured by this process
    others_busy: float = 0.0  # cores other processes kept busy while it was measured


LOADED_CORES = 0.25  # a roof measured while others used more than this is not cached


def _machine_busy_seconds() -> Optional[float]:
    """The host's busy CPU seconds since boot (/proc/stat), None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return sum(int(x) for x in (fields[1:4] + fields[6:9])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _measure_with_load(n: int) -> tuple[float, float]:
    """(matmul_roof(n), cores other processes used meanwhile): a roof measured on a busy
    machine is low, and caching it would make every later MFU on this machine too high."""
    t, busy0, t0 = os.times(), _machine_busy_seconds(), time.perf_counter()
    own0 = t.user + t.system
    value = matmul_roof(n)
    t, busy1, wall = os.times(), _machine_busy_seconds(), time.perf_counter() - t0
    if busy0 is None or busy1 is None or wall <= 0:
        return value, 0.0
    return value, max(0.0, ((busy1 - busy0) - (t.user + t.system - own0)) / wall)


def roof_cache_path() -> pathlib.Path:
    """$XDG_CACHE_HOME/jaxlm/matmul_roof.json (default ~/.cache/jaxlm/...)."""
    return user_cache_dir(ROOF_CACHE_FILE)


def roof_key(n: int) -> str:
    """What the roof depends on: the device, the CPU model, the cores this process may use, the
    jax version and the matmul size."""
    import jax

    k = _roof_devices()
    threads = f" | {k} single-threaded devices" if k > 1 else ""
    return (f"{jax.devices()[0].device_kind} | {cpu_model()} | {xla_flags.usable_cores()} cores"
            f"{threads} | "
            f"jax {jax.__version__} | n={n}")


def _read_cache(path: pathlib.Path) -> dict:
    """The cache's entries; {} when it is missing, unreadable or damaged (then re-measured)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: pathlib.Path, entries: dict) -> None:
    """Atomically (a whole file or none); a cache that cannot be written is not an error."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".matmul_roof.",
                                         suffix=".tmp", delete=False, encoding="utf-8") as f:
            tmp = f.name
            json.dump(entries, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


@functools.lru_cache(maxsize=None)
def machine_roof(n: int = 1024) -> Roof:
    """This machine's matmul roof, from the cache when it holds one for `roof_key(n)`, else
    measured (`matmul_roof`) and cached, unless other processes were busy meanwhile (then it
    is used by this process only). A damaged entry or file is measured again."""
    path, key = roof_cache_path(), roof_key(n)
    entries = _read_cache(path)
    entry = entries.get(key)
    if os.environ.get(REMEASURE_ENV, "0") != "1" and isinstance(entry, dict):
        value, when = entry.get("flops"), entry.get("measured")
        if isinstance(value, (int, float)) and 0 < value < 1e18 and isinstance(when, str):
            return Roof(float(value), when, cached=True)
    value, others = _measure_with_load(n)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if others > LOADED_CORES:  # this run uses it; the next start measures again
        return Roof(value, when, cached=False, others_busy=others)
    entries = _read_cache(path)  # another process may have added a key meanwhile
    entries[key] = {"flops": value, "measured": when}
    _write_cache(path, entries)
    return Roof(value, when, cached=False, others_busy=others)


def system_peak(devices: list, dtype: str, override: Optional[float] = None) -> tuple[float, str]:
    """(peak FLOP/s of all `devices` together, where the number comes from).

    `override` is per device (train.peak_flops). CPU: the measured matmul roof of the host
    (the CPU "devices" of one process share its cores, so it is not multiplied by their count),
    cached per machine (`machine_roof`); the source says when it was measured."""
    kind, device_platform = devices[0].device_kind, devices[0].platform
    if override:
        return override * len(devices), "train.peak_flops"
    if device_platform == "cpu":
        roof = machine_roof()
        busy = (f"; other processes kept {roof.others_busy:.1f} cores busy meanwhile, so it is "
                "low and not cached" if roof.others_busy > LOADED_CORES else "")
        k = _roof_devices()
        what = f"its {k} single-threaded CPU devices at once" if k > 1 else "this machine"
        return roof.flops, f"measured float32 matmul roof of {what} ({roof.measured}{busy})"
    peak = peak_flops(kind, dtype)
    if peak is None:
        roof = machine_roof()
        return (roof.flops * len(devices),
                f"measured matmul roof ({kind} not in the table; {roof.measured})")
    return peak * len(devices), f"{kind} {'float32' if dtype == 'float32' else 'bfloat16'} peak"


def mfu(tokens_per_sec: float, model_flops_token: float, peak: float) -> float:
    """Model FLOPs utilization: achieved model FLOP/s / peak FLOP/s."""
    return tokens_per_sec * model_flops_token / peak if peak > 0 else 0.0


__all__ = ["param_counts", "flops_per_token", "model_flops_per_token", "peak_flops",
           "matmul_roof", "machine_roof", "roof_cache_path", "Roof",
           "system_peak", "mfu", "PEAK_FLOPS", "REMEASURE_ENV"]
