"""jaxlm.evaluate: classification metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlm.evaluate import baseline_note, classification_metrics, evaluate


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


def test_classification_baseline_is_the_majority_label_share():
    conf = np.array([[30, 10], [5, 55]])  # 40 true 0s, 60 true 1s
    out = evaluate(lambda p, b, tb: {"nats": 1.0, "tokens": 100.0, "correct": 85.0,
                                     "confusion": conf, "bytes": 0.0},
                   None, [{}], token_bytes=None)
    assert out["eval_accuracy_baseline"] == pytest.approx(0.6)


def test_token_baseline_is_the_commonest_target_share_over_all_batches():
    # batch 1: token 3 twice, token 5 once; batch 2: token 5 three times -> 5 is commonest (4/6)
    batches = [np.array([3, 3, 5]), np.array([5, 5, 5])]

    def step(params, targets, token_bytes):
        return {"nats": 1.0, "tokens": float(targets.size), "correct": 0.0, "bytes": 1.0,
                "target_counts": np.bincount(targets, minlength=8).astype(np.float32)}

    out = evaluate(step, None, batches, token_bytes=None)
    assert out["eval_accuracy_baseline"] == pytest.approx(4 / 6)
    assert out["eval_accuracy"] == 0.0


def test_eval_step_counts_masked_targets_only():
    import jax.numpy as jnp

    from jaxlm.train.step import eval_step

    class Uniform:  # a "model" whose logits are all equal: only the bookkeeping is under test
        def apply(self, variables, inputs, train, **kw):
            return jnp.zeros(inputs.shape + (6,))

    batch = {"inputs": jnp.array([[1, 2, 3, 4]]), "targets": jnp.array([[2, 2, 4, 4]]),
             "mask": jnp.array([[1, 1, 1, 0]])}  # the last 4 is padding
    out = eval_step(None, batch, jnp.ones(6), model=Uniform())
    np.testing.assert_array_equal(np.asarray(out["target_counts"]), [0, 0, 2, 0, 1, 0])


@pytest.mark.parametrize("acc, base, says", [(0.30, 0.33, "below"), (0.34, 0.33, "within"),
                                             (0.40, 0.33, None)])
def test_baseline_note(acc, base, says):
    note = baseline_note({"eval_accuracy": acc, "eval_accuracy_baseline": base})
    assert (note is None) if says is None else (says in note and "0.3300" in note)

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
