"""Weights in and out of jaxlm: Hugging Face GPT-2 folders, PyTorch LSTM state_dicts, run
directories. Safetensors are read and written without PyTorch."""

from jaxlm.interop.hf_gpt2 import (
    config_from_hf, config_to_hf, load_hf_gpt2, params_from_hf, params_to_hf, save_hf_gpt2,
)
from jaxlm.interop.lstm_torch import load_torch_lstm, lstm_to_torch
from jaxlm.interop.rundir import Run, load_init_params, load_run, write_run

__all__ = [
    "load_hf_gpt2", "save_hf_gpt2", "config_from_hf", "config_to_hf", "params_from_hf",
    "params_to_hf", "load_torch_lstm", "lstm_to_torch", "Run", "load_run", "write_run",
    "load_init_params",
]
