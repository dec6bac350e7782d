"""jaxlm.models.transformer: parameter layout and names (GPT-2 and modern variants)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm import flops
from jaxlm.config import ModelConfig
from jaxlm.models import build_model

VOCAB = 259  # the byte tokenizer's
GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
MODERN = dataclasses.replace(
    GPT2, position="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, tie_embeddings=False,
    use_bias=False,
)


def _init(cfg: ModelConfig, t: int = 8):
    model = build_model(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, t), jnp.int32))
    return model, variables


def test_transformer_kernel_names():
    _, variables = _init(MODERN, 8)
    specs = nn.get_partition_spec(variables["params"])
    assert tuple(specs["wte"]["embedding"]) == ("vocab", "embed")
    attn = specs["h_0"]["attn"]
    assert tuple(attn["query"]["kernel"]) == ("embed", "heads", "head_dim")
    assert tuple(attn["key"]["kernel"]) == ("embed", "kv_heads", "head_dim")
    assert tuple(attn["out"]["kernel"]) == ("heads", "head_dim", "embed")
    assert tuple(specs["h_0"]["mlp"]["up"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["h_0"]["mlp"]["down"]["kernel"]) == ("mlp", "embed")
    assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")


def test_gpt2_layout_defaults():
    # only the sizes are changed from ModelConfig's defaults: the layout is the default one
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
    assert (cfg.position, cfg.norm, cfg.mlp, cfg.tie_embeddings, cfg.use_bias) == (
        "learned", "layernorm", "gelu", True, True)
    _, variables = _init(cfg, 8)
    params = nn.meta.unbox(variables["params"])
    assert "lm_head" not in params  # tied: the output head is wte
    assert params["wte"]["embedding"].shape == (VOCAB, 32)
    assert params["wpe"].shape == (32, 32)  # learned positions, max_seq_len rows
    blk = params["h_0"]
    for proj in ("query", "key", "value", "out"):
        assert "bias" in blk["attn"][proj]
    assert blk["attn"]["query"]["kernel"].shape == (32, 4, 8)
    assert "bias" in blk["mlp"]["up"] and "bias" in blk["mlp"]["down"]
    assert blk["mlp"]["up"]["kernel"].shape == (32, 128)  # 4x width
    assert "gate" not in blk["mlp"]
    for ln in (blk["ln_1"], blk["ln_2"], params["ln_f"]):  # LayerNorm: scale and bias
        assert set(ln["norm"]) == {"scale", "bias"}
    assert set(params) == {"wte", "wpe", "h_0", "h_1", "ln_f"}
    # init: N(0, 0.02); residual projections scaled down by 1/sqrt(2 * n_layers)
    assert abs(float(params["wte"]["embedding"].std()) - 0.02) < 0.004
    assert float(blk["mlp"]["down"]["kernel"].std()) < 0.8 * float(blk["mlp"]["up"]["kernel"].std())

    total, non_embed = flops.param_counts(params)
    assert total == sum(x.size for x in jax.tree.leaves(params))
    assert total - non_embed == params["wte"]["embedding"].size + params["wpe"].size


def test_modern_layout():
    _, variables = _init(MODERN, 8)
    params = nn.meta.unbox(variables["params"])
    assert "wpe" not in params  # rope
    assert params["lm_head"]["kernel"].shape == (32, VOCAB)  # untied
    blk = params["h_0"]
    assert blk["attn"]["key"]["kernel"].shape == (32, 2, 8)  # 2 kv heads
    assert blk["attn"]["query"]["kernel"].shape == (32, 4, 8)
    assert all("bias" not in blk["attn"][p] for p in ("query", "key", "value", "out"))
    assert set(blk["mlp"]) == {"gate", "up", "down"}
    assert blk["mlp"]["up"]["kernel"].shape == (32, 128)  # 8/3 * 32 rounded up to 64s -> 128
    assert set(blk["ln_1"]["norm"]) == {"scale"}  # RMSNorm
    total, non_embed = flops.param_counts(params)
    assert total - non_embed == params["wte"]["embedding"].size + params["lm_head"]["kernel"].size
