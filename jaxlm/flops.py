"""The one FLOP counter: parameter counts and training FLOPs per token.

Transformer convention (Kaplan et al. 2020 / Chinchilla practice): forward + backward
= 6 * N_nonembed + 6 * n_layers * seq_len * d_model per token, causal attention counted in full.
LSTM: 6 * N_nonembed per token (every weight is used once per token; no attention term).
"""

from __future__ import annotations

from typing import Any

from flax.traverse_util import flatten_dict

from jaxlm.config import ModelConfig

EMBEDDING_PARAMS = ("wte", "wpe", "embed", "lm_head", "head")


def param_counts(params: Any) -> tuple[int, int]:
    """(total, non-embedding): embeddings, learned positions and the output head excluded."""
    total = non_embed = 0
    for path, leaf in flatten_dict(params).items():
        n = int(leaf.size)
        total += n
        if path[0] not in EMBEDDING_PARAMS:
            non_embed += n
    return total, non_embed


def flops_per_token(cfg: ModelConfig, non_embedding_params: int, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token."""
    flops = 6.0 * non_embedding_params
    if cfg.family == "transformer":
        flops += 6.0 * cfg.n_layers * seq_len * cfg.d_model
    return flops


__all__ = ["param_counts", "flops_per_token"]
