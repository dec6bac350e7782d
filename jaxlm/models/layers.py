"""Building blocks with logical axis names on every parameter.

Logical names (`batch`, `length`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `vocab`) are
mapped to mesh axes by one rules table in `jaxlm.sharding`. Layers take explicit dims and dtypes.
Shape letters: b batch, t length, d embed, n heads, k kv heads, h head_dim, f mlp, v vocab.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm import sharding
from jaxlm.config import REMAT_POLICIES
from jaxlm.models.attention import block_size, cached_attention, splash_attention
from jaxlm.models.block_attention import block_causal_attention
from jaxlm.models.context_attention import context_attention
from jaxlm.models.matmul import dense_dot_general

Dtype = Any


def dtype_of(name: str) -> Dtype:
    """A config dtype name; `auto` (model.dtype) resolves for the default backend."""
    if name == "auto":
        from jaxlm.config import compute_dtype

        name = compute_dtype(name, jax.default_backend())
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


# model.remat (config.REMAT_POLICIES, "none" aside) -> what jax.checkpoint saves for backward
REMAT_SAVE = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs
}
assert set(REMAT_SAVE) == set(REMAT_POLICIES) - {"none"}

# The collection one-token decoding at batch 1 reads the projections back into the residual
# stream from (attention's `out`, the MLP's `down`): their kernels transposed to (out, in), built
# once per `jaxlm.generate` call on CPU (`models.transformer.decode_kernels`). A single row's
# product then runs along the kernel's rows: XLA:CPU's matrix-vector product over twelve
# (3072, 768) kernels ran at 21 GB/s, over their (768, 3072) transposes at 37 GB/s; GPT-2 small
# decoded 1.08x the tokens/s at batch 1 (46.3 -> 50.1, generation A/B, 8 alternating rounds).
DECODE_KERNELS = "decode_kernels"


def row_matvec(module: nn.Module, name: str, x_bti: jax.Array, use_bias: bool,
               dtype: Dtype) -> Optional[jax.Array]:
    """`module`'s Dense child `name` applied to one row x (1, 1, in) through the transposed kernel
    (out, in) in DECODE_KERNELS, as (1, 1, out); None when x has more rows or there is no such
    kernel (the caller applies the layer itself)."""
    if x_bti.shape[0] * x_bti.shape[1] != 1 or not module.has_variable(DECODE_KERNELS, name):
        return None
    bias = module.variables["params"][name]["bias"] if use_bias else None
    x_bti, w_oi, bias = nn.dtypes.promote_dtype(
        x_bti, module.get_variable(DECODE_KERNELS, name), bias, dtype=dtype)
    y_bto = jnp.einsum("oi,bti->bto", w_oi, x_bti)
    return y_bto if bias is None else y_bto + bias.reshape(-1)


def normal(std: float, axes: tuple[Optional[str], ...]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def zeros(axes: tuple[Optional[str], ...]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones(axes: tuple[Optional[str], ...]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


class Norm(nn.Module):
    """LayerNorm (GPT-2) or RMSNorm over the last axis; statistics in float32."""

    kind: str  # layernorm | rmsnorm
    eps: float
    use_bias: bool
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        if self.kind == "rmsnorm":
            return nn.RMSNorm(
                epsilon=self.eps, dtype=self.dtype, param_dtype=self.param_dtype,
                scale_init=ones(("embed",)), name="norm",
            )(x_btd)
        return nn.LayerNorm(
            epsilon=self.eps, use_bias=self.use_bias, dtype=self.dtype,
            param_dtype=self.param_dtype, scale_init=ones(("embed",)),
            bias_init=zeros(("embed",)), name="norm",
        )(x_btd)


def rope(x_btnh: jax.Array, positions_bt: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (rotate-half form, as in GPT-NeoX / LLaMA)."""
    h = x_btnh.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    angles_bth = positions_bt[..., None].astype(jnp.float32) * inv_freq  # (b, t, h/2)
    sin = jnp.sin(angles_bth)[:, :, None, :]
    cos = jnp.cos(angles_bth)[:, :, None, :]
    x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_btnh.dtype)


class Attention(nn.Module):
    """Causal multi-head / grouped-query self-attention via jax.nn.dot_product_attention.

    With `decode=True` (generation) keys and values go to a preallocated `cache` collection
    (`cached_key`/`cached_value` (b * k, S, h), head-major; `cache_index`): each call writes its
    t tokens at slots [index, index + t) and attends over the whole cache (`cached_attention`).
    A query at slot s with absolute position p sees the slots [s - p, s], so left-padded rows
    (padding below position 0) ignore their padding. The cache length S is the token length of
    the `init` call that creates it.
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    use_bias: bool
    use_rope: bool
    rope_theta: float
    init_std: float
    out_init_std: float
    dtype: Dtype
    param_dtype: Dtype
    implementation: Optional[str] = None  # xla|cudnn|splash|blockwise (models.attention)
    decode: bool = False
    causal: bool = True  # False: bidirectional (the masked-LM / classification encoder)
    qkv_bias: bool = False  # query/key/value biases even when use_bias is False (Qwen2)
    q_scale: float = 1.0  # extra factor on the queries (μP: attention scale 1/head_dim)

    @nn.compact
    def __call__(
        self, x_btd: jax.Array, positions_bt: jax.Array, valid_bt: Optional[jax.Array] = None
    ) -> jax.Array:
        """`valid_bt` (optional, bool): keys where it is False (padding) are attended by no one."""
        d = x_btd.shape[-1]

        def proj(name: str, heads: int, head_axis: str) -> jax.Array:
            return nn.DenseGeneral(
                features=(heads, self.head_dim), axis=-1,
                use_bias=self.use_bias or self.qkv_bias,
                dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=normal(self.init_std, ("embed", head_axis, "head_dim")),
                bias_init=zeros((head_axis, "head_dim")), dot_general=dense_dot_general(),
                name=name,
            )(x_btd)

        q_btnh = proj("query", self.n_heads, "heads")
        k_btkh = proj("key", self.n_kv_heads, "kv_heads")
        v_btkh = proj("value", self.n_kv_heads, "kv_heads")
        if self.use_rope:
            q_btnh = rope(q_btnh, positions_bt, self.rope_theta)
            k_btkh = rope(k_btkh, positions_bt, self.rope_theta)
        if self.q_scale != 1.0:  # every kernel then applies its own 1/sqrt(head_dim)
            q_btnh = q_btnh * jnp.asarray(self.q_scale, q_btnh.dtype)
        if self.decode:
            k_xsh, v_xsh, mask_bts = self._update_cache(k_btkh, v_btkh, positions_bt)
            out_btnh = cached_attention(q_btnh, k_xsh, v_xsh, mask_bts)
        elif sharding.length_shards()[1] > 1:  # context parallel: keys/values all-gathered
            out_btnh = context_attention(q_btnh, k_btkh, v_btkh, causal=self.causal,
                                         valid_bt=valid_bt)
        else:
            mask = None if valid_bt is None else valid_bt[:, None, None, :]  # (b, 1, 1, t)
            impl = self.implementation if mask is None else None  # padding masks: XLA
            if impl == "splash":
                out_btnh = splash_attention(q_btnh, k_btkh, v_btkh, causal=self.causal)
            elif impl == "blockwise" and self.causal:
                out_btnh = block_causal_attention(q_btnh, k_btkh, v_btkh,
                                                  block_size=block_size(q_btnh.shape[1]))
            else:
                out_btnh = jax.nn.dot_product_attention(
                    q_btnh, k_btkh, v_btkh, mask=mask, is_causal=self.causal,
                    implementation=impl if impl in ("xla", "cudnn") else None,
                )
        b, t = out_btnh.shape[:2]
        out_row = row_matvec(self, "out", out_btnh.reshape(b, t, -1), self.use_bias, self.dtype)
        if out_row is not None:
            return out_row
        return nn.DenseGeneral(
            features=d, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=normal(self.out_init_std, ("heads", "head_dim", "embed")),
            bias_init=zeros(("embed",)), dot_general=dense_dot_general(), name="out",
        )(out_btnh)

    def _update_cache(
        self, k_btkh: jax.Array, v_btkh: jax.Array, positions_bt: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Writes k, v at the cache index; returns the whole head-major cache (b * k, S, h)
        (`cached_attention` says why batch and heads share an axis) and the (b, t, S) mask."""
        b, t, k, h = k_btkh.shape
        cached_k = self.variable("cache", "cached_key", jnp.zeros, (b * k, t, h), k_btkh.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, (b * k, t, h), v_btkh.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        i = index.value
        cached_k.value = jax.lax.dynamic_update_slice(
            cached_k.value, k_btkh.transpose(0, 2, 1, 3).reshape(b * k, t, h), (0, i, 0))
        cached_v.value = jax.lax.dynamic_update_slice(
            cached_v.value, v_btkh.transpose(0, 2, 1, 3).reshape(b * k, t, h), (0, i, 0))
        index.value = i + t
        # offset of each key slot from each query slot: causal (<= 0) and not before position 0
        offset_ts = jnp.arange(cached_k.value.shape[1])[None, :] - (i + jnp.arange(t))[:, None]
        mask_bts = (offset_ts <= 0) & (offset_ts >= -positions_bt[:, :, None])
        return cached_k.value, cached_v.value, mask_bts


class Mlp(nn.Module):
    """GPT-2 MLP (tanh-approximated GELU) or SwiGLU."""

    d_ff: int
    kind: str  # gelu | swiglu
    use_bias: bool
    init_std: float
    out_init_std: float
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        d = x_btd.shape[-1]

        def dense(name: str, features: int, axes: tuple[str, str], std: float) -> nn.Dense:
            return nn.Dense(
                features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=normal(std, axes), bias_init=zeros((axes[1],)),
                dot_general=dense_dot_general(), name=name,
            )

        if self.kind == "swiglu":
            gate_btf = dense("gate", self.d_ff, ("embed", "mlp"), self.init_std)(x_btd)
            up_btf = dense("up", self.d_ff, ("embed", "mlp"), self.init_std)(x_btd)
            h_btf = nn.silu(gate_btf) * up_btf
        else:
            h_btf = nn.gelu(dense("up", self.d_ff, ("embed", "mlp"), self.init_std)(x_btd))
        out_row = row_matvec(self, "down", h_btf, self.use_bias, self.dtype)
        if out_row is not None:
            return out_row
        return dense("down", d, ("mlp", "embed"), self.out_init_std)(h_btf)
