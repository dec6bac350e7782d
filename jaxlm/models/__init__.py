"""Model registry: one `build_model(config)` for every family."""

from __future__ import annotations

import flax.linen as nn

from jaxlm.config import FAMILIES, ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.models.lstm import LSTMLM
from jaxlm.models.transformer import Transformer

MODEL_CLASSES = {"transformer": Transformer, "lstm": LSTMLM}  # one per config.FAMILIES
assert tuple(MODEL_CLASSES) == FAMILIES


def build_model(cfg: ModelConfig) -> nn.Module:
    """A flax module mapping tokens (b, t) to logits (b, t, vocab_size)."""
    if cfg.vocab_size is None:
        raise JaxlmError("model.vocab_size is unset: resolve it from the tokenizer first")
    if cfg.family not in MODEL_CLASSES:
        raise JaxlmError(f"unknown model.family '{cfg.family}'; choose from {sorted(FAMILIES)}")
    return MODEL_CLASSES[cfg.family](cfg)


__all__ = ["build_model", "FAMILIES", "MODEL_CLASSES", "Transformer", "LSTMLM"]
