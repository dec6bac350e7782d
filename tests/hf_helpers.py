"""A tiny random Hugging Face GPT-2 saved locally (no download): the one the interop tests use,
unit (tests/unit/interop/test_hf_gpt2.py) and end to end (tests/e2e/test_interop.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

VOCAB = 300
HF_SHAPE = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _randomize(model: "torch.nn.Module", std: float = 0.1, seed: int = 0) -> None:
    """HF initializes LayerNorms to 1/0 and biases to 0: perturb every tensor so that a
    transposed or misplaced one cannot go unnoticed; a wider embedding spreads the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.add_(noise if "weight" not in name or p.ndim > 1 else noise * 0.5)
            if name.endswith("wte.weight"):
                p.mul_(3.0)


def _hf_model(**overrides):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**HF_SHAPE, **overrides}))
    _randomize(model)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = _hf_model()
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    model.save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return model, path


def _tokens(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t))


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(tokens, np.int64))).logits.numpy()


# Tiny random Llama-family models (tests/unit/interop/test_hf_llama.py, tests/e2e/test_interop.py)
LLAMA_SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   rms_norm_eps=1e-5, rope_theta=5000.0)
LLAMA_KINDS = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}


def llama_model(kind: str = "llama", **overrides):
    """A randomly initialized LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM, every
    tensor perturbed (norm weights and Qwen2's biases are 1 and 0 at init)."""
    torch.manual_seed(0)
    config = getattr(transformers, LLAMA_KINDS[kind])(**{**LLAMA_SHAPE, **overrides})
    model = transformers.AutoModelForCausalLM.from_config(config)
    _randomize(model)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3.0)
    return model.eval()
