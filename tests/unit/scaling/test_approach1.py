"""Chinchilla Approach 1 (jaxlm.scaling.approach1): the envelope of loss curves recovers a
known law; it refuses data whose minima the sizes do not bracket."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling.approach1 import approach1_predict, fit_approach1
from scaling_helpers import law3, n_opt_true

K = dict(E=1.8, A=400.0, B=1500.0, al=0.34, be=0.30)  # a = be / (al + be) = 0.469


def _curves(sizes, tokens, noise=0.003, seed=0):
    """Each size at every token budget (cooldown branches of one trunk), noisy law3."""
    N = np.repeat(sizes, tokens.size)
    D = np.tile(tokens, sizes.size)
    L = law3(N, D, **K) * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))
    return N, D, 6 * N * D, L


def test_envelope_recovers_a_synthetic_law():
    N, D, C, L = _curves(np.geomspace(1e6, 1e9, 13), np.geomspace(1e8, 1e12, 12))
    f = fit_approach1(N, D, C, L, n_boot=50)
    a_true = K["be"] / (K["al"] + K["be"])
    assert f.fitted and f.n_sizes == 13 and f.n_bracketed >= 10
    assert f.a.value == pytest.approx(a_true, abs=0.02)
    assert f.b.value == pytest.approx(1 - a_true, abs=0.02)
    assert f.a.interval[0] < a_true < f.a.interval[1]
    p = approach1_predict(f, [1e19])
    assert p.N_opt[0] == pytest.approx(float(n_opt_true(K, 1e19)), rel=0.2)
    assert p.N_opt[0] * p.D_opt[0] * 6 == pytest.approx(1e19, rel=0.2)
    assert p.N_opt_interval[0][0] < p.N_opt[0] < p.N_opt_interval[0][1]


def test_envelope_is_the_running_minimum_of_a_curve():
    """A size's worse loss at more compute (a diverged or badly tuned point) does not make it
    lose a budget it already won at less compute."""
    N, D, C, L = _curves(np.geomspace(1e6, 1e9, 13), np.geomspace(1e8, 1e12, 12), noise=0)
    f0 = fit_approach1(N, D, C, L, n_boot=0)
    bad = L.copy()
    bad[5] *= 3  # one point of one curve, much worse
    f1 = fit_approach1(N, D, C, bad, n_boot=0)
    assert f1.a.value == pytest.approx(f0.a.value, abs=0.02)


def test_unbracketed_minima_are_refused():
    # sizes far below the optimum: the largest size wins every budget
    N, D, C, L = _curves(np.geomspace(1e3, 1e4, 4), np.geomspace(1e10, 1e12, 8))
    f = fit_approach1(N, D, C, L, n_boot=10)
    assert not f.fitted and "do not bracket" in f.refused and f.n_bracketed == 0
    with pytest.raises(JaxlmError, match="not fitted"):
        approach1_predict(f, [1e19])
    with pytest.raises(JaxlmError, match="at least 3 sizes with points at 2 or more"):
        fit_approach1(*_curves(np.geomspace(1e6, 1e9, 13), np.array([1e9])), n_boot=0)
