"""The measurements of `gpu_suite.py`, one function per part; each runs in its own process
(`gpu_suite.py --child PART --spec JSON`) and returns a JSON-able dict.

Shapes come from the spec the suite passes, so the same code runs the H200 sizes and the tiny
`--cpu-dry-run` shapes.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

import numpy as np

PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
            "orbax-checkpoint", "grain", "omegaconf", "tensorboardX", "torch", "transformers",
            "numpy")


def env(spec: dict) -> dict:
    """Device, versions and the attention kernel jaxlm resolves for the first training size."""
    import jax

    from jaxlm.models import attention

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    dev = jax.devices()[0]
    d = spec["attention_probe"]  # heads, head_dim, seq_len of the first training size
    impl, warning = attention.resolve("auto", platform=dev.platform, dtype=spec["dtype"],
                                      n_heads=d["n_heads"], n_kv_heads=d["n_heads"],
                                      head_dim=d["head_dim"], seq_len=d["seq_len"])
    smi = ""
    if dev.platform == "gpu":
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            smi = f"nvidia-smi failed: {e}"
    return {"device_kind": dev.device_kind, "platform": dev.platform,
            "device_count": len(jax.devices()), "nvidia_smi": smi,
            "python": platform.python_version(), "versions": versions,
            "attention_auto": impl, "attention_warning": warning or "",
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def roof(spec: dict) -> dict:
    """Measured matmul rate: an n x n x n product in bfloat16 (and float32), best of 10."""
    import jax
    import jax.numpy as jnp

    n, out = spec["n"], {"n": spec["n"]}
    for dtype in ("bfloat16", "float32"):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
        mm = jax.jit(lambda x: x @ x)
        mm(a).block_until_ready()
        best = float("inf")
        for _ in range(10):
            t0 = time.perf_counter()
            mm(a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out[f"{dtype}_tflops"] = 2.0 * n**3 / best / 1e12
    return out


def train(spec: dict) -> dict:
    """One training configuration, measured as bench_train measures it (tokens/s, step time,
    MFU, compile time, peak memory), plus MFU against the suite's measured bf16 roof."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_train

    row = bench_train.measure(spec)
    if spec.get("roof_tflops"):
        row["mfu_vs_roof"] = row["mfu"] * row["peak_flops"] / (spec["roof_tflops"] * 1e12)
    return row


def _text_batches(vocab: int, batch: int, seq_len: int, n: int) -> list[dict]:
    """n (batch, seq_len) next-token batches from the embedded corpus, byte-tokenized."""
    from jaxlm.data.corpora import stdlib_corpus
    from jaxlm.data.tokenizers import ByteTokenizer

    assert vocab == ByteTokenizer.vocab_size
    corpus, tok, ids = stdlib_corpus(0.05), ByteTokenizer(), []
    need = n * batch * (seq_len + 1)
    for doc in corpus.train:
        ids.append(tok.encode(doc))
        if sum(map(len, ids)) >= need:
            break
    flat = np.concatenate(ids)[:need].reshape(n, batch, seq_len + 1)
    return [{"inputs": w[:, :-1], "targets": w[:, 1:], "mask": np.ones((batch, seq_len), bool)}
            for w in flat]


def numerics(spec: dict) -> dict:
    """Loss curves of one small model trained in bfloat16 and in float32 compute (float32
    params in both) from the same initial weights on the same text batches."""
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common
    from jaxlm import config as config_lib

    dims, steps = spec["dims"], spec["steps"]
    batches = _text_batches(259, spec["batch"], spec["seq_len"], steps)
    curves = {}
    for dtype in ("float32", "bfloat16"):
        cfg = config_lib.load_config(None, [
            "model.vocab_size=259", f"model.max_seq_len={spec['seq_len']}",
            f"data.seq_len={spec['seq_len']}", f"train.batch_size={spec['batch']}",
            f"train.steps={steps}", "optim.warmup_steps=5", f"model.dtype={dtype}",
            *(f"model.{k}={v}" for k, v in dims.items())])
        setup = _common.build(cfg)
        state, losses = setup.state, []
        for b in batches:
            state, m = setup.train_step(state, jax.device_put(b, setup.batch_sharding))
            losses.append(m["loss"])
        curves[dtype] = [float(x) for x in losses]
    f32, bf16 = np.asarray(curves["float32"]), np.asarray(curves["bfloat16"])
    tail = max(1, steps // 4)
    tail_gap = float(abs(bf16[-tail:].mean() - f32[-tail:].mean()))
    finite = bool(np.isfinite(f32).all() and np.isfinite(bf16).all())
    return {"steps": steps, "float32": curves["float32"], "bfloat16": curves["bfloat16"],
            "max_abs_diff": float(np.abs(bf16 - f32).max()), "tail_mean_gap": tail_gap,
            "tail_steps": tail, "loss_drop_f32": float(f32[0] - f32[-1]),
            "ok": bool(finite and tail_gap < spec["tolerance"] and f32[-1] < f32[0])}


def decode(spec: dict) -> dict:
    """Greedy decode tokens/s of jaxlm's KV-cache loop vs transformers' `generate`, the same
    random GPT-2-shaped weights in both, both in the same compute dtype, on the same device."""
    import jax
    import torch
    import transformers

    from jaxlm.generate import generate
    from jaxlm.interop import load_hf_gpt2
    from jaxlm.models import build_model

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(**spec["gpt2"])
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        cfg, params = load_hf_gpt2(d)
    dtype = spec["dtype"]
    model = build_model(dataclasses.replace(cfg, dtype=dtype))
    params = jax.device_put(params)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = hf.to(device=device, dtype=getattr(torch, dtype))
    rows = []
    for b in spec["batches"]:
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (b, spec["prompt"]))
        pt = torch.from_numpy(prompt).to(device)

        def run_jaxlm():
            generate(model, params, prompt, max_new_tokens=spec["new"], temperature=0.0)

        def run_hf():
            with torch.no_grad():
                hf.generate(pt, attention_mask=torch.ones_like(pt), do_sample=False,
                            max_new_tokens=spec["new"], min_new_tokens=spec["new"],
                            pad_token_id=0)
            if device == "cuda":
                torch.cuda.synchronize()

        row = {"batch": b, "new_tokens": spec["new"], "prompt": spec["prompt"]}
        for name, fn in (("jaxlm", run_jaxlm), ("transformers", run_hf)):
            fn()  # compile / warm up
            times = []
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            row[f"{name}_tokens_per_sec"] = b * spec["new"] / statistics.median(times)
        row["ratio"] = row["jaxlm_tokens_per_sec"] / row["transformers_tokens_per_sec"]
        rows.append(row)
    return {"rows": rows, "layers": hf_cfg.n_layer, "d_model": hf_cfg.n_embd, "dtype": dtype,
            "device": device, "torch": torch.__version__}


def train_py(spec: dict) -> dict:
    """README's main job, shortened: `python train.py KEY=VALUE ...` in a fresh workdir with
    default settings otherwise; the last metrics line it wrote."""
    import json

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", "--workdir", workdir,
                               *spec["overrides"]], cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"train.py exited {proc.returncode}: "
                               f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    records = [json.loads(x) for x in lines]
    last_train = [r for r in records if "tokens_per_sec" in r and "loss" in r][-1]
    evals = [r for r in records if "eval_loss" in r]
    return {"wall_s": wall, "step": last_train["step"], "loss": last_train["loss"],
            "tokens_per_sec": last_train["tokens_per_sec"], "mfu": last_train.get("mfu"),
            "eval_bpb": evals[-1].get("eval_bpb") if evals else None,
            "overrides": spec["overrides"]}


PARTS: dict[str, Any] = {"env": env, "roof": roof, "train": train, "numerics": numerics,
                         "decode": decode, "train_py": train_py}
