"""Model registry: one `build_model(config)` for every family."""

from __future__ import annotations

import flax.linen as nn

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.models.lstm import LSTMLM
from jaxlm.models.transformer import Transformer

FAMILIES = {"transformer": Transformer, "lstm": LSTMLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    """A flax module mapping tokens (b, t) to logits (b, t, vocab_size)."""
    if cfg.vocab_size is None:
        raise JaxlmError("model.vocab_size is unset: resolve it from the tokenizer first")
    if cfg.family not in FAMILIES:
        raise JaxlmError(f"unknown model.family '{cfg.family}'; choose from {sorted(FAMILIES)}")
    return FAMILIES[cfg.family](cfg)


__all__ = ["build_model", "FAMILIES", "Transformer", "LSTMLM"]
