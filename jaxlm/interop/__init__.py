"""Weights in and out of jaxlm: Hugging Face GPT-2 and Llama-family (Llama, Mistral, Qwen2)
folders (`load_hf` / `save_hf` pick the layout), PyTorch LSTM state_dicts, run directories.
Safetensors are read and written without PyTorch.

The format converters (`hf`, `hf_gpt2`, `hf_llama`, `lstm_torch`) depend only on the config and
the models, so `train.init_from` (jaxlm.init_from) can read them. This package's face also
offers the run directory's readers and writers (jaxlm.rundir) and `load_init_params`; those load
on first use (PEP 562), since they sit above the converters and import them.
"""

from __future__ import annotations

import importlib
from typing import Any

from jaxlm.interop.hf_gpt2 import (
    config_from_hf, config_to_hf, load_hf_gpt2, params_from_hf, params_to_hf, save_hf_gpt2,
)
from jaxlm.interop.hf import load_hf, save_hf
from jaxlm.interop.hf_llama import load_hf_llama, save_hf_llama
from jaxlm.interop.lstm_torch import load_torch_lstm, lstm_to_torch

_LAZY = {"Run": "jaxlm.rundir", "load_run": "jaxlm.rundir", "write_run": "jaxlm.rundir",
         "load_init_params": "jaxlm.init_from"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxlm.interop' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "load_hf", "save_hf", "load_hf_llama", "save_hf_llama", "load_hf_gpt2", "save_hf_gpt2",
    "config_from_hf", "config_to_hf", "params_from_hf",
    "params_to_hf", "load_torch_lstm", "lstm_to_torch", "Run", "load_run", "write_run",
    "load_init_params",
]
