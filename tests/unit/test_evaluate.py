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
