"""jaxlm.interop.hf_llama and the `load_hf` / `save_hf` dispatch: Llama, Mistral and Qwen2
folders in and out, against transformers (float32 logits within 1e-4, greedy token ids equal,
export round trips), sharded index files, refusals. Tiny random models built locally, offline."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.generate import generate
from jaxlm.interop import load_hf, load_hf_gpt2, save_hf
from jaxlm.interop.hf import hf_layout
from jaxlm.interop.hf_llama import config_from_hf_llama
from jaxlm.models import build_model

from hf_helpers import (  # noqa: F401 - hf_dir: a fixture
    LLAMA_SHAPE, VOCAB, _hf_logits, _tokens, hf_dir, llama_model,
)

# name -> (kind, config overrides): GQA and multi-head, tied and untied, biases, sliding window
CASES = {
    "llama-gqa-untied": ("llama", {}),
    "llama-mha-tied": ("llama", {"num_key_value_heads": 4, "tie_word_embeddings": True}),
    "mistral-mqa-window": ("mistral", {"num_key_value_heads": 1, "sliding_window": 48}),
    "qwen2-qkv-bias-tied": ("qwen2", {"tie_word_embeddings": True}),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> (transformers model, its save_pretrained folder), built once per module."""
    out = {}
    for name, (kind, overrides) in CASES.items():
        model = llama_model(kind, **overrides)
        path = tmp_path_factory.mktemp("llama") / name
        model.save_pretrained(path)
        out[name] = (model, path)
    return out


def _jax_logits(cfg: ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(build_model(cfg).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(folders, name):
    model, path = folders[name]
    cfg, params = load_hf(path)  # the stacked layout: test_export_round_trip_through_transformers
    kind, overrides = CASES[name]
    assert (cfg.position, cfg.norm, cfg.mlp, cfg.use_bias) == ("rope", "rmsnorm", "swiglu", False)
    assert cfg.n_kv_heads == overrides.get("num_key_value_heads", 2)
    assert cfg.tie_embeddings == overrides.get("tie_word_embeddings", False)
    assert ("lm_head" in params) != cfg.tie_embeddings
    assert (cfg.rope_theta, cfg.norm_eps, cfg.d_ff) == (5000.0, 1e-5, 96)
    assert cfg.qkv_bias == (kind == "qwen2")
    assert cfg.max_seq_len == (48 if "window" in name else 64)
    tokens = _tokens(2, 40)
    want, got = _hf_logits(model, tokens), _jax_logits(cfg, params, tokens)
    diff = float(np.abs(want - got).max())
    print(f"{name}: max |logits jaxlm - transformers| = {diff:.2e} "
          f"(logit scale {np.abs(want).max():.1f})")
    assert diff < 1e-4


def test_greedy_generation_matches_transformers(folders):
    model, path = folders["llama-gqa-untied"]
    cfg, params = load_hf(path)
    prompts = [[5, 17, 250, 3, 99], [42, 7, 7]]
    ours = generate(build_model(cfg), params, prompts, max_new_tokens=20, temperature=0.0)
    for prompt, new in zip(prompts, ours.new_tokens):
        with torch.no_grad():
            hf = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20,
                                min_new_tokens=20, pad_token_id=0, eos_token_id=None)
        assert new == hf[0, len(prompt):].tolist()


def test_sharded_index_loads_like_one_file(folders, tmp_path):
    model, path = folders["llama-gqa-untied"]
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    _, want = load_hf(path)
    _, got = load_hf(tmp_path / "sharded")
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("name, arch", [("llama-gqa-untied", "LlamaForCausalLM"),
                                        ("llama-mha-tied", "LlamaForCausalLM"),
                                        ("qwen2-qkv-bias-tied", "Qwen2ForCausalLM")])
def test_export_round_trip_through_transformers(folders, name, arch, tmp_path):
    model, path = folders[name]
    cfg, params = load_hf(path, scan_layers=name == "llama-gqa-untied")  # both layouts out
    save_hf(cfg, params, tmp_path / "out", eos_token_id=1)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == arch
    assert back.config.eos_token_id == 1
    tokens = _tokens(2, 24, seed=1)
    diff = float(np.abs(_hf_logits(back, tokens) - _hf_logits(model, tokens)).max())
    print(f"{name}: export round trip, max |logits re-loaded - original| = {diff:.2e}")
    assert diff < 1e-5
    _, again = load_hf(tmp_path / "out", scan_layers=cfg.scan_layers)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_export_of_a_jaxlm_model_matches_its_logits(tmp_path):
    """A model born in jaxlm (GQA, untied, no biases, its own RoPE base) -> transformers."""
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      d_ff=96, max_seq_len=64, position="rope", rope_theta=500.0,
                      norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", tie_embeddings=False,
                      use_bias=False, dtype="float32")
    tokens = _tokens(2, 32, seed=2)
    # random values in the model's own parameter tree (no init to compile)
    shapes = jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0),
                            jnp.asarray(tokens, jnp.int32))["params"]
    shapes = nn.unbox(shapes)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0, 0.2, x.shape).astype(np.float32), shapes)
    save_hf(cfg, params, tmp_path / "out")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    diff = float(np.abs(_hf_logits(hf, tokens) - _jax_logits(cfg, params, tokens)).max())
    print(f"jaxlm-born Llama export: max |logits transformers - jaxlm| = {diff:.2e}")
    assert diff < 1e-4


def test_load_hf_dispatches_gpt2_too(hf_dir):
    _, path = hf_dir
    cfg, params = load_hf(path)
    assert cfg.position == "learned" and cfg.norm == "layernorm"
    jax.tree.map(np.testing.assert_array_equal, params, load_hf_gpt2(path)[1])


@pytest.mark.parametrize("hf, match", [
    ({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"},
     "architecture 'GPTNeoXForCausalLM' is not supported; jaxlm imports GPT2LMHeadModel, "
     "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"),
    ({"model_type": "gemma"}, "model_type 'gemma' is not supported"),
])
def test_unknown_architectures_are_named(hf, match):
    with pytest.raises(JaxlmError, match=match):
        hf_layout(hf)


def test_layout_from_model_type_when_architectures_is_missing():
    assert hf_layout({"model_type": "mistral"}) == "llama"
    assert hf_layout({"model_type": "gpt2", "architectures": None}) == "gpt2"


@pytest.mark.parametrize("change, match", [
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "RoPE scaling 'llama3'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "RoPE scaling 'linear'"),
    ({"head_dim": 32}, "head_dim=32"),
    ({"attention_bias": True}, "attention_bias=True with mlp_bias=False"),
    ({"num_key_value_heads": 3}, "not divisible by num_key_value_heads=3"),
    ({"pretraining_tp": 2}, "pretraining_tp=2"),
    ({"hidden_size": None}, "bad value"),
])
def test_unrepresentable_llama_configs_are_refused(change, match):
    hf = {**LLAMA_SHAPE, "model_type": "llama", **change}
    with pytest.raises(JaxlmError, match=match):
        config_from_hf_llama(hf)


def test_missing_config_key_is_named():
    hf = {"model_type": "llama", **{k: v for k, v in LLAMA_SHAPE.items()
                                    if k != "intermediate_size"}}
    with pytest.raises(JaxlmError, match="missing key 'intermediate_size'"):
        config_from_hf_llama(hf)


def test_llama_biases_and_v4_rope_theta():
    hf = {**LLAMA_SHAPE, "model_type": "llama", "attention_bias": True, "mlp_bias": True,
          "rope_theta": 1e6}
    cfg = config_from_hf_llama(hf)
    assert cfg.use_bias and not cfg.qkv_bias and cfg.rope_theta == 1e6


def test_save_hf_refuses_what_neither_layout_expresses(tmp_path):
    cfg = ModelConfig(vocab_size=VOCAB, position="rope", norm="layernorm", mlp="gelu")
    with pytest.raises(JaxlmError, match="GPT-2.*model.position=rope"):
        save_hf(cfg, {}, tmp_path / "x")
    assert not (tmp_path / "x").exists()
