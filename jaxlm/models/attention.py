"""Attention kernels and the choice between them.

`model.attention_impl`:
- `xla`: `jax.nn.dot_product_attention`'s XLA implementation (every platform).
- `cudnn`: its cuDNN flash-attention implementation (NVIDIA GPUs; bfloat16/float16 compute).
- `splash`: the Pallas splash-attention kernel (TPU), as in MaxText.
- `blockwise`: exact causal attention that skips the key blocks above the diagonal
  (`models.block_attention`; plain jnp, any platform): the CPU fast path.
- With a context (sequence) mesh axis, every choice runs `models.context_attention` (XLA
  attention per shard, keys/values all-gathered; its docstring says why the kernels cannot).
- `auto` (default): cudnn on GPU and splash on TPU when they compile for the model's shapes;
  on CPU, blockwise for causal attention over at least two blocks; otherwise XLA.

`resolve` makes the choice once at startup by compiling the kernel for the run's shapes; when
a fast kernel is unavailable it says why and the run continues with XLA (never silently).
Padding masks (classification / masked-LM batches with padding) always use XLA.
Decoding with a KV cache (generation) runs `cached_attention`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import sharding
from jaxlm.config import ATTENTION_IMPLS

IMPLEMENTATIONS = ATTENTION_IMPLS  # defined with the config
BLOCK_SIZE = 64  # blockwise: query/key block (benchmarks/bench_attention.py; 64 beat 128 and 32)
LONG_SEQ, LONG_BLOCK_SIZE = 1024, 128  # from LONG_SEQ tokens on, fewer and larger blocks


def block_size(seq_len: int) -> int:
    """Block attention's query/key block for sequences of `seq_len` tokens: 64, and 128 from
    1024 tokens on. Train-step A/Bs on 2 CPU cores: block 128 stepped 0.95x the time of 64 at
    4 x 1024 and 0.90x at 2 x 2048 (256: 0.91x there), but 1.03x at 16 x 256 and 8 x 512."""
    return LONG_BLOCK_SIZE if seq_len >= LONG_SEQ else BLOCK_SIZE


def _splash_module():
    """The splash-attention modules; ImportError where this jaxlib has no Pallas TPU ops."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (  # noqa: PLC0415
        splash_attention_kernel as kernel,
        splash_attention_mask as mask_lib,
    )

    return kernel, mask_lib


def _block(t: int) -> int:
    for b in (512, 256, 128):
        if t % b == 0:
            return b
    return t


def _splash_local(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array, causal: bool,
                  interpret: bool) -> jax.Array:
    kernel, mask_lib = _splash_module()
    b, t, n, h = q_btnh.shape
    one = mask_lib.CausalMask((t, t)) if causal else mask_lib.FullMask((t, t))
    block = _block(t)
    sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    splash = kernel.make_splash_mha(mask_lib.MultiHeadMask([one] * n), head_shards=1,
                                    q_seq_shards=1, block_sizes=sizes, interpret=interpret)
    groups = n // k_btkh.shape[2]  # grouped-query attention: each kv head serves `groups` heads
    k_bnth = jnp.repeat(k_btkh, groups, axis=2).transpose(0, 2, 1, 3)
    v_bnth = jnp.repeat(v_btkh, groups, axis=2).transpose(0, 2, 1, 3)
    q_bnth = (q_btnh * (1.0 / np.sqrt(h)).astype(q_btnh.dtype)).transpose(0, 2, 1, 3)
    return jax.vmap(splash)(q_bnth, k_bnth, v_bnth).transpose(0, 2, 1, 3)


def splash_attention(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array, *,
                     causal: bool = True, interpret: Optional[bool] = None) -> jax.Array:
    """Pallas splash attention, (b, t, n, h) queries and (b, t, k, h) keys/values in, (b, t, n, h)
    out. Inside a sharded step (a mesh from `sharding.activation_mesh`) the kernel runs per
    shard under shard_map: batch over (data, fsdp), heads over tensor. `interpret` (default:
    off TPU) runs the kernel in the Pallas interpreter, which is how it is tested on CPU."""
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _splash_local(q_btnh, k_btkh, v_btkh, causal, interpret)
    spec = sharding.logical_spec(("batch", "length", "heads", "head_dim"))
    return jax.shard_map(
        lambda q, k, v: _splash_local(q, k, v, causal, interpret),
        mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False,
    )(q_btnh, k_btkh, v_btkh)


def _compile_error(fn, *shapes: jax.ShapeDtypeStruct) -> Optional[str]:
    """None when `fn` compiles for `shapes` on the default backend, else the error's first line."""
    try:
        jax.jit(fn).lower(*shapes).compile()
    except Exception as e:  # noqa: BLE001 - any failure means "not available here"
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]
    return None


def resolve(requested: str, *, platform: str, dtype: str, n_heads: int, n_kv_heads: int,
            head_dim: int, seq_len: int, causal: bool = True,
            context: int = 1) -> tuple[str, Optional[str]]:
    """(the implementation to run, a warning to print when a fast kernel is unavailable).

    Compiles the candidate kernel (forward and backward) for one sequence of the run's shapes,
    so a fast path is only chosen when it works on this device. With the sequence split over
    `context` devices, attention runs `models.context_attention` (XLA per shard)."""
    if context > 1:
        why = (None if requested in ("auto", "xla") else
               f"jaxlm: model.attention_impl={requested} does not run per sequence shard (its "
               f"causal mask assumes queries and keys start together); with mesh.context="
               f"{context} attention all-gathers keys/values and uses XLA attention per shard")
        return "xla", why
    if requested == "blockwise" and not causal:
        return "xla", ("jaxlm: model.attention_impl=blockwise is for causal attention; using XLA "
                       "attention for this bidirectional model")
    if requested in ("xla", "blockwise"):
        return requested, None
    if requested == "auto" and platform not in ("gpu", "tpu"):
        return ("blockwise" if causal and seq_len >= 2 * BLOCK_SIZE else "xla"), None
    want = requested if requested != "auto" else ("cudnn" if platform == "gpu" else "splash")
    needs = {"cudnn": "gpu", "splash": "tpu"}[want]
    if platform != needs:
        return "xla", (f"jaxlm: model.attention_impl={want} needs a {needs.upper()} (this is "
                       f"{platform}); using XLA attention")
    jdtype = jnp.dtype(dtype)
    q = jax.ShapeDtypeStruct((1, seq_len, n_heads, head_dim), jdtype)
    kv = jax.ShapeDtypeStruct((1, seq_len, n_kv_heads, head_dim), jdtype)
    if want == "cudnn":
        if dtype not in ("bfloat16", "float16"):
            return "xla", (f"jaxlm: cuDNN flash attention needs bfloat16/float16 compute "
                           f"(model.dtype={dtype}); using XLA attention")

        def attn(q, k, v):
            return jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                                implementation="cudnn")
    else:
        try:
            _splash_module()
        except ImportError as e:
            return "xla", f"jaxlm: splash attention is not available ({e}); using XLA attention"

        def attn(q, k, v):
            return splash_attention(q, k, v, causal=causal, interpret=False)

    def fwd_bwd(q, k, v):
        return jax.grad(lambda *a: attn(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))(q, k, v)

    err = _compile_error(fwd_bwd, q, kv, kv)
    if err:
        return "xla", (f"jaxlm: {want} attention does not compile for heads={n_heads}, "
                       f"head_dim={head_dim}, seq_len={seq_len}, {dtype} ({err}); "
                       f"using XLA attention")
    return want, None


def cached_attention(q_btnh: jax.Array, k_xsh: jax.Array, v_xsh: jax.Array,
                     mask_bts: jax.Array) -> jax.Array:
    """Attention of t new queries over a head-major KV cache (b * k, S, h), row x = (batch row
    x // k, kv head x % k); (b, t, n, h) out.

    The cache is head-major because both matmuls then read it in place: with a sequence-major
    cache (b, S, k, h) XLA:CPU copied every layer's whole cache into a transposed layout on
    every decode step (25 of 61 ms per token at GPT-2-small shape, batch 8). Batch and heads
    are one axis because a (1, k, S, h) cache reached the matmuls through a bitcast (the batch
    of one dropped) that XLA fused with the cache update: at batch 1 the update then ran twice
    and every layer's cache was copied four times per token (3 of 24 ms per token at
    GPT-2-small shape, 143 cached tokens; a jax.profiler trace of the compiled loop)."""
    b, t, n, h = q_btnh.shape
    k = k_xsh.shape[0] // b
    g = n // k  # grouped-query attention: each kv head serves g query heads
    q_xqh = q_btnh.reshape(b, t, k, g, h).transpose(0, 2, 3, 1, 4).reshape(b * k, g * t, h)
    s_xqs = jnp.einsum("xqh,xsh->xqs", q_xqh, k_xsh, preferred_element_type=jnp.float32)
    s_bkqs = s_xqs.reshape(b, k, g * t, -1) * jnp.float32(1.0 / h ** 0.5)  # as jax.nn's XLA path
    mask_b1qs = jnp.broadcast_to(mask_bts[:, None, None], (b, 1, g, t, mask_bts.shape[-1]))
    s_bkqs = jnp.where(mask_b1qs.reshape(b, 1, g * t, -1), s_bkqs, jnp.finfo(jnp.float32).min)
    p_xqs = jax.nn.softmax(s_bkqs, axis=-1).astype(v_xsh.dtype).reshape(b * k, g * t, -1)
    out_xqh = jnp.einsum("xqs,xsh->xqh", p_xqs, v_xsh)
    return out_xqh.reshape(b, k, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


__all__ = ["IMPLEMENTATIONS", "block_size", "cached_attention", "resolve", "splash_attention"]
