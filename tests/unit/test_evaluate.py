"""jaxlm.evaluate: classification metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlm.evaluate import classification_metrics


@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_sklearn(seed):
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))  # class 3 never predicted
    if seed == 3:
        y, p = y % 3, p % 3  # class 3 absent from both: not averaged over (as scikit-learn)
    conf = np.zeros((k, k))
    np.add.at(conf, (y, p), 1)
    got = classification_metrics(conf)
    assert got["eval_accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        want = fn(y, p, average="macro", zero_division=0)
        assert got[f"eval_{name}"] == pytest.approx(want), name


# ---------------------------------------------------------------------------------------------
# what an eval measured (issue 21.15)


def test_evaluate_says_what_it_measured():
    import jax.numpy as jnp

    from jaxlm.evaluate import coverage_text, evaluate, with_coverage

    def step(params, batch, token_bytes):
        return {"nats": jnp.float32(2.0), "tokens": jnp.float32(4.0), "bytes": jnp.float32(8.0)}

    batches = [{"x": i} for i in range(3)]
    out = evaluate(step, None, batches, None)
    assert out["eval_batches"] == 3 and out["eval_tokens"] == 12
    assert with_coverage(out, 0)["eval_full_split"]  # all of it asked for
    assert with_coverage(out, 5)["eval_full_split"]  # the split ran out first
    first = with_coverage(out, 3)
    assert not first["eval_full_split"]
    assert coverage_text(first) == "the first 3 eval batches (12 tokens), not the whole split"
    assert coverage_text(with_coverage(out, 0)) == "the whole eval split (3 batches, 12 tokens)"
