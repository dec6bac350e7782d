"""Per-device memory of a long-context train step with and without the context (sequence) axis,
from XLA's memory analysis of the compiled step (nothing is run) on 8 fake CPU devices.

A batch of 2 long sequences cannot be split more than 2 ways by batch; without a context axis
the other devices can only split heads/MLP (tensor), at most n_heads ways, and every device
holds the (batch, length, embed) activations between layers of whole sequences. Every mesh runs XLA attention (`model.attention_impl=xla`), so
the rows differ only in the mesh.

    python benchmarks/bench_context_memory.py --seq-len 2048 --layers 4 --remat full
    python benchmarks/bench_context_memory.py --seq-len 2048 --layers 4 --remat full --heads 2
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from jaxlm import sharding  # noqa: E402
from jaxlm.config import MeshConfig, ModelConfig, OptimConfig  # noqa: E402
from jaxlm.models import build_model  # noqa: E402
from jaxlm.train.memory import gib  # noqa: E402
from jaxlm.train.optim import build_optimizer, schedule  # noqa: E402
from jaxlm.train.state import state_shardings  # noqa: E402
from jaxlm.train.step import abstract_batch, compile_steps  # noqa: E402

MESHES = {  # name: (devices, mesh)
    "1 device": (1, MeshConfig(data=1)),
    "fsdp=2 tensor=2 (no context, 4 devices)": (4, MeshConfig(data=1, fsdp=2, tensor=2)),
    "tensor=8 (no context)": (8, MeshConfig(data=1, tensor=8)),
    "fsdp=2 tensor=4 (no context)": (8, MeshConfig(data=1, fsdp=2, tensor=4)),
    "fsdp=2 context=2 tensor=2": (8, MeshConfig(data=1, fsdp=2, context=2, tensor=2)),
    "fsdp=2 context=4": (8, MeshConfig(data=1, fsdp=2, context=4)),
    "context=8": (8, MeshConfig(data=1, context=8)),
}


def step_memory(model_cfg: ModelConfig, mesh_cfg: MeshConfig, n: int, batch: int,
                seq_len: int) -> dict[str, float]:
    """XLA's per-device figures for one compiled train step (bytes) and the compile time."""
    mesh = sharding.make_mesh(mesh_cfg, jax.devices()[:n])
    model, optim = build_model(model_cfg), OptimConfig()
    opt = build_optimizer(optim, 100)
    abstract, shardings = state_shardings(model, opt, seq_len, mesh)
    step, _ = compile_steps(model, opt, schedule(optim, 100), shardings, mesh)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract, shardings)
    t0 = time.perf_counter()
    m = step.lower(state, abstract_batch(mesh, "clm", batch, seq_len)).compile().memory_analysis()
    return {"args": m.argument_size_in_bytes, "temp": m.temp_size_in_bytes,
            "total": (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                      + m.temp_size_in_bytes + m.generated_code_size_in_bytes),
            "compile_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--remat", default="none", help="model.remat: none | full | dots_saveable")
    args = ap.parse_args()
    cfg = ModelConfig(vocab_size=256, d_model=args.d_model, n_layers=args.layers,
                      n_heads=args.heads, max_seq_len=args.seq_len, attention_impl="xla",
                      remat=args.remat)
    print(f"model d_model={args.d_model} layers={args.layers} heads={args.heads} "
          f"remat={args.remat}, batch {args.batch} x {args.seq_len} tokens, float32, "
          f"jax {jax.__version__}")
    print("| mesh | per device: total | activations etc. (temp) | arguments | vs 1 device |")
    print("|---|---|---|---|---|")
    base = None
    for name, (n, mesh_cfg) in MESHES.items():
        if args.heads % mesh_cfg.tensor:
            print(f"| {name} | - (heads={args.heads} do not split {mesh_cfg.tensor} ways) | | | |")
            continue
        r = step_memory(cfg, mesh_cfg, n, args.batch, args.seq_len)
        base = base or r["total"]
        print(f"| {name} | {gib(r['total'])} | {gib(r['temp'])} | {gib(r['args'])} | "
              f"{r['total'] / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
