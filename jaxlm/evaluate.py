"""Evaluation: loss, perplexity and bits per byte over batches of held-out text."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import numpy as np

from jaxlm.errors import JaxlmError


def summarize(nats: float, tokens: float, n_bytes: float) -> dict[str, float]:
    """eval_loss (nats/token), eval_perplexity, eval_bpb = nats / (ln 2 * UTF-8 bytes)."""
    loss = nats / max(tokens, 1.0)
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 700.0)),
        "eval_bpb": nats / (math.log(2) * max(n_bytes, 1.0)),
        "eval_tokens": int(tokens),
        "eval_bytes": int(n_bytes),
    }


def evaluate(
    eval_step: Callable, params: Any, batches: Iterable[dict[str, np.ndarray]],
    token_bytes: jax.Array, put: Callable[[dict], Any] = lambda b: b,
) -> dict[str, float]:
    """Runs `eval_step(params, batch, token_bytes)` over `batches`; sums stay on device until the end."""
    totals = None
    for batch in batches:
        out = eval_step(params, put(batch), token_bytes)
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
    if totals is None:
        raise ValueError("no evaluation batches")
    totals = jax.device_get(totals)
    if float(totals["tokens"]) == 0:
        raise JaxlmError("the evaluation split holds no text to evaluate")
    return summarize(float(totals["nats"]), float(totals["tokens"]), float(totals["bytes"]))
