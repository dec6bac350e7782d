"""jaxlm.interop.hf_gpt2: Hugging Face GPT-2 folders in and out (parity of logits and
greedy generation with transformers, safetensors and pytorch_model.bin, rejections).
Everything randomly initialized, offline."""

from __future__ import annotations

import dataclasses
import os
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
from jaxlm.interop import config_from_hf, load_hf_gpt2, save_hf_gpt2
from jaxlm.models import build_model

from hf_helpers import HF_SHAPE, VOCAB, _hf_logits, _hf_model, _tokens, hf_dir  # noqa: F401 - hf_dir: a fixture


def _jax_logits(cfg: ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(build_model(cfg).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2 -> jaxlm


@pytest.mark.parametrize("scan_layers", [False, True])
def test_load_hf_gpt2_logits_match(hf_dir, scan_layers):
    model, path = hf_dir
    cfg, params = load_hf_gpt2(path, scan_layers=scan_layers)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.vocab_size, cfg.max_seq_len) == (
        64, 2, 4, VOCAB, 64)
    assert cfg.tie_embeddings and cfg.position == "learned" and cfg.norm_eps == 1e-5
    assert ("h" in params) == scan_layers
    tokens = _tokens(3, 40)
    want, got = _hf_logits(model, tokens), _jax_logits(cfg, params, tokens)
    diff = float(np.abs(want - got).max())
    print(f"max |logits jaxlm - transformers| = {diff:.2e} (logit scale {np.abs(want).max():.1f})")
    assert diff < 1e-4


def test_greedy_generation_matches_hf(hf_dir):
    model, path = hf_dir
    cfg, params = load_hf_gpt2(path)
    prompts = [[5, 17, 250, 3, 99], [42, 7, 7]]
    ours = generate(build_model(cfg), params, prompts, max_new_tokens=24, temperature=0.0)
    for prompt, new in zip(prompts, ours.new_tokens):
        with torch.no_grad():
            hf = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24,
                                min_new_tokens=24, pad_token_id=0)
        assert new == hf[0, len(prompt):].tolist()
    # a left-padded batch in transformers gives the same continuations as our batch
    with torch.no_grad():
        ids = torch.tensor([prompts[0], [0, 0] + prompts[1]])
        mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
        hf = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=24,
                            min_new_tokens=24, pad_token_id=0)
    assert hf[:, 5:].tolist() == ours.new_tokens


def test_pytorch_model_bin(hf_dir, tmp_path):
    model, path = hf_dir
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text((path / "config.json").read_text())
    # the classic layout: no `transformer.` prefix, attention-mask buffers, a tied lm_head
    state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    torch.save(state, folder / "pytorch_model.bin")
    cfg, params = load_hf_gpt2(folder)
    _, want = load_hf_gpt2(path)
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_bfloat16_safetensors_without_torch_reader(hf_dir, tmp_path):
    model, _ = hf_dir
    bf16 = _hf_model().to(torch.bfloat16)
    bf16.save_pretrained(tmp_path / "bf16")
    cfg, params = load_hf_gpt2(tmp_path / "bf16")
    assert params["wte"]["embedding"].dtype == np.float32
    want = bf16.transformer.wte.weight.detach().float().numpy()
    np.testing.assert_array_equal(params["wte"]["embedding"], want)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "llama"}, "model_type"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"activation_function": "gelu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"scale_attn_weights": False}, "scale_attn_weights"),
    ({"add_cross_attention": True}, "cross-attention"),
    ({"n_head": 5}, "divisible"),
])
def test_unrepresentable_hf_configs_are_rejected(change, match):
    hf = {**HF_SHAPE, "model_type": "gpt2", **change}
    with pytest.raises(JaxlmError, match=match):
        config_from_hf(hf)


def test_missing_or_misshapen_weights(hf_dir, tmp_path):
    _, path = hf_dir
    with pytest.raises(JaxlmError, match="does not exist"):
        load_hf_gpt2(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JaxlmError, match="config.json"):
        load_hf_gpt2(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    hf = json.loads((path / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**hf, "n_embd": 32}))
    with pytest.raises(JaxlmError, match="no weights"):
        load_hf_gpt2(bad)
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(JaxlmError, match="shape"):
        load_hf_gpt2(bad)


# ---------------------------------------------------------------------------------------------
# jaxlm -> Hugging Face GPT-2


GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)


@pytest.mark.parametrize("variant", ["tied", "untied-scan", "d_ff"])
def test_save_hf_gpt2_round_trip(variant, tmp_path):
    cfg = {"tied": GPT2, "untied-scan": dataclasses.replace(GPT2, tie_embeddings=False,
                                                            scan_layers=True),
           "d_ff": dataclasses.replace(GPT2, d_ff=48)}[variant]
    model = build_model(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                          params)  # biases and norms away from their 0/1 init
    save_hf_gpt2(cfg, params, tmp_path / "out", eos_token_id=1)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert hf.config.eos_token_id == 1
    tokens = _tokens(2, 20)
    diff = float(np.abs(_hf_logits(hf, tokens) - _jax_logits(cfg, params, tokens)).max())
    print(f"{variant}: max |logits transformers(exported) - jaxlm| = {diff:.2e}")
    assert diff < 1e-4
    back_cfg, back = load_hf_gpt2(tmp_path / "out", scan_layers=cfg.scan_layers)
    assert back_cfg.tie_embeddings == cfg.tie_embeddings and back_cfg.d_ff == cfg.d_ff
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, back)


@pytest.mark.parametrize("change", [dict(position="rope"), dict(norm="rmsnorm"),
                                    dict(mlp="swiglu"), dict(n_kv_heads=2),
                                    dict(use_bias=False), dict(mup_base_width=16)])
def test_export_rejects_non_gpt2_models(change, tmp_path):
    cfg = dataclasses.replace(GPT2, **change)
    with pytest.raises(JaxlmError, match="cannot export"):
        save_hf_gpt2(cfg, {}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_exported_weights_get_the_same_mode_as_the_config(tmp_path):
    """safetensors writes its file 0600; the export gives it the umask's mode, as config.json."""
    model = build_model(GPT2)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    old = os.umask(0o022)
    try:
        out = save_hf_gpt2(GPT2, params, tmp_path / "out")
    finally:
        os.umask(old)
    assert (out / "config.json").stat().st_mode & 0o777 == 0o644
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
