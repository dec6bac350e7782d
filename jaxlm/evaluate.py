"""Evaluation: loss, perplexity and bits per byte over batches of held-out text (plus
next-token / masked-token accuracy); classification: accuracy and macro precision, recall, F1.
Every accuracy comes with `eval_accuracy_baseline`, the accuracy of always guessing the eval
set's commonest target."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

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
    bar: Optional[Any] = None,
) -> dict[str, float]:
    """Runs `eval_step(params, batch, token_bytes)` over `batches`; sums stay on device until the end.

    `bar` (a tqdm bar, optional) advances as batches finish: batch i is waited for only after
    batch i+1 is dispatched, so the device always has the next batch queued."""
    totals = previous = None
    n_batches = 0
    for batch in batches:
        n_batches += 1
        out = eval_step(params, put(batch), token_bytes)
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
        if bar is not None:
            if previous is not None:
                jax.block_until_ready(previous)
                bar.update(1)
            previous = out
    if bar is not None and previous is not None:
        jax.block_until_ready(previous)
        bar.update(1)
        bar.close()
    if totals is None:
        raise ValueError("no evaluation batches")
    totals = jax.device_get(totals)
    if float(totals["tokens"]) == 0:
        raise JaxlmError("the evaluation split holds no text to evaluate")
    if "confusion" in totals:  # classification: per example, no bytes
        out = classification_metrics(np.asarray(totals["confusion"]))
        out["eval_accuracy_baseline"] = majority_share(np.asarray(totals["confusion"]).sum(axis=1))
        loss = float(totals["nats"]) / float(totals["tokens"])
        return {"eval_loss": loss, **out, "eval_examples": int(totals["tokens"]),
                "eval_batches": n_batches}
    out = summarize(float(totals["nats"]), float(totals["tokens"]), float(totals["bytes"]))
    if "correct" in totals:
        out["eval_accuracy"] = float(totals["correct"]) / float(totals["tokens"])
    if "target_counts" in totals:
        out["eval_accuracy_baseline"] = majority_share(np.asarray(totals["target_counts"]))
    out["eval_batches"] = n_batches
    return out


def majority_share(counts: np.ndarray) -> float:
    """The accuracy of always guessing the commonest target (label or token) of the eval set:
    the floor an accuracy must clear before it says the model learned anything."""
    counts = np.asarray(counts, np.float64)
    return float(counts.max() / counts.sum()) if counts.sum() > 0 else 0.0


def baseline_note(metrics: dict[str, float], margin: float = 0.02) -> Optional[str]:
    """One line when eval_accuracy is within `margin` of eval_accuracy_baseline (or below it):
    then the accuracy says little more than how skewed the eval targets are."""
    acc, base = metrics.get("eval_accuracy"), metrics.get("eval_accuracy_baseline")
    if acc is None or base is None or acc >= base + margin:
        return None
    how = "below" if acc < base else f"within {margin} of"
    return (f"note: accuracy {acc:.4f} is {how} always guessing the eval set's commonest target ({base:.4f}): the model has learned "
            "little beyond how often each target occurs")


def with_coverage(out: dict[str, Any], max_batches: int) -> dict[str, Any]:
    """`out` (from `evaluate` over at most `max_batches` batches, 0: all) with
    `eval_full_split`: whether it covers the whole eval split (all of it asked for, or the split
    ran out first). Numbers over the first batches and over the whole split differ."""
    full = max_batches == 0 or out["eval_batches"] < max_batches
    return {**out, "eval_full_split": full}


def coverage_text(out: dict[str, Any]) -> str:
    """What an eval measured, for people: 'the whole eval split (12 batches, 49,152 tokens)' or
    'the first 100 eval batches (409,600 tokens), not the whole split'."""
    n = out.get("eval_batches", 0)
    size = (f"{out['eval_tokens']:,} tokens" if "eval_tokens" in out
            else f"{out.get('eval_examples', 0):,} examples")
    if out.get("eval_full_split"):
        return f"the whole eval split ({n} batch{'es' if n != 1 else ''}, {size})"
    return f"the first {n} eval batch{'es' if n != 1 else ''} ({size}), not the whole split"


def classification_metrics(confusion: np.ndarray) -> dict[str, float]:
    """From a (true, predicted) count matrix: eval_accuracy and the macro averages (unweighted
    means over the classes that occur in the labels or predictions, as scikit-learn's
    average='macro' with zero_division=0) eval_precision,
    eval_recall and eval_f1."""
    c = np.asarray(confusion, np.float64)
    tp = np.diag(c)
    predicted, actual = c.sum(axis=0), c.sum(axis=1)
    div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
    precision, recall = div(tp, predicted), div(tp, actual)
    f1 = div(2 * precision * recall, precision + recall)
    present = (predicted + actual) > 0  # classes seen in the labels or the predictions
    return {
        "eval_accuracy": float(tp.sum() / max(c.sum(), 1.0)),
        "eval_precision": float(precision[present].mean()),
        "eval_recall": float(recall[present].mean()),
        "eval_f1": float(f1[present].mean()),
    }
