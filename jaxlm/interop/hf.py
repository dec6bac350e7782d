"""One door for Hugging Face causal-LM folders: `load_hf` reads config.json's `architectures`
(else `model_type`) and hands the folder to the converter for that layout; `save_hf` picks the
layout a jaxlm model has (GPT-2, or Llama / Qwen2)."""

from __future__ import annotations

import pathlib
from typing import Any, Optional

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.interop.hf_gpt2 import CONFIG_JSON, load_hf_gpt2, read_hf_config, save_hf_gpt2
from jaxlm.interop.hf_llama import MODEL_TYPES, is_llama_like, load_hf_llama, save_hf_llama

# architecture (config.json `architectures`) -> (model_type, layout)
ARCHITECTURES = {"GPT2LMHeadModel": ("gpt2", "gpt2"),
                 **{arch: (mt, "llama") for mt, arch in MODEL_TYPES.items()}}
_LOADERS = {"gpt2": load_hf_gpt2, "llama": load_hf_llama}


def hf_layout(hf: dict, source: str = CONFIG_JSON) -> str:
    """`gpt2` or `llama` for an HF config dict; JaxlmError naming an unsupported architecture."""
    archs = hf.get("architectures") or []
    if not isinstance(archs, list):
        archs = [archs]
    model_type = hf.get("model_type")
    for arch in archs:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch][1]
    if not archs:
        for mt, layout in ARCHITECTURES.values():
            if mt == model_type:
                return layout
    what = f"architecture {archs[0]!r}" if archs else f"model_type {model_type!r}"
    raise JaxlmError(f"{source}: {what} is not supported; jaxlm imports "
                     f"{', '.join(ARCHITECTURES)} (model_type "
                     f"{', '.join(sorted({mt for mt, _ in ARCHITECTURES.values()}))})")


def load_hf(path: str | pathlib.Path, *, scan_layers: bool = False) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a Hugging Face `save_pretrained` folder of a GPT-2 or a
    Llama-family (Llama, Mistral, Qwen2) causal LM. Params are host numpy arrays in jaxlm's
    per-layer layout (stacked `h` with scan_layers=True)."""
    folder = pathlib.Path(path)
    layout = hf_layout(read_hf_config(folder), source=str(folder / CONFIG_JSON))
    return _LOADERS[layout](folder, scan_layers=scan_layers)


def save_hf(config: ModelConfig, params: Any, path: str | pathlib.Path, *,
            eos_token_id: Optional[int] = None) -> pathlib.Path:
    """Writes a folder `transformers` loads: LlamaForCausalLM (Qwen2ForCausalLM with q/k/v-only
    biases) for a RoPE + RMSNorm + SwiGLU model, else GPT2LMHeadModel (which refuses, naming the
    keys, a model GPT-2 cannot express)."""
    save = save_hf_llama if is_llama_like(config) else save_hf_gpt2
    return save(config, params, path, eos_token_id=eos_token_id)
