"""jaxlm.scaling.records: the typed fit records (fit.json)."""

import dataclasses
import json

import numpy as np
import pytest

from jaxlm.scaling import fit as F
from scaling_helpers import isoflop_grid, random_constants


# ------------------------------------------------------------------ typed records


def test_fit_all_record_is_fit_json_and_reads_like_a_dict():
    """fit_all gives a frozen FamilyFit whose to_json() is fit.json's family entry (its keys
    in fit.json's order, no bootstrap samples or theta), and which reads like the dicts it
    replaced (`jaxlm fit`'s summary line and the notebooks read it so)."""
    rng = np.random.default_rng(9)
    k = random_constants(rng)
    N, D, C, L = isoflop_grid(rng, k, noise=0.005, budgets=np.geomspace(1e17, 1e19, 4),
                              per_budget=5)
    f = F.fit_all(N, D, C * 1.05, L, n_boot=8)
    assert isinstance(f, F.FamilyFit) and isinstance(f.approach3, F.Approach3Fit)
    assert isinstance(f.approach2, F.Approach2Fit) and isinstance(f.holdout, F.HoldoutCheck)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.approach3.E = None
    doc = f.to_json()
    assert list(doc) == ["n_points", "skipped", "L(N)", "L(D)", "L(C)", "approach2",
                         "approach3", "predictions", "holdout"]
    assert list(doc["approach3"]) == ["form", "n_points", "huber_delta", "objective", "E", "A",
                                      "B", "alpha", "beta", "a", "b", "N", "D", "loss",
                                      "residuals_log_loss", "rmse_log_loss"]
    assert list(doc["L(C)"]) == ["form", "n_points", "A", "alpha", "C_c", "x", "loss",
                                 "residuals_log_loss", "rmse_log_loss", "E", "index"]
    assert list(doc["approach2"]) == ["form", "n_budgets", "n_bracketed", "a", "k", "b", "k_D",
                                      "budgets"]
    assert list(doc["predictions"]) == ["approach3", "approach2", "L(C)"]
    assert list(doc["predictions"]["L(C)"]) == ["C", "loss"]
    assert list(doc["holdout"]["fit"]) == ["E", "A", "B", "alpha", "beta"]
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    assert F.strip_private({"fam": f}) == {"fam": doc}
    # the dict view: the same keys, with the in-memory values
    assert list(f) == list(doc) and list(f["approach3"]) == list(doc["approach3"])
    assert f["approach3"]["E"]["value"] == f.approach3.E.value
    assert f.get("L(C)", {}).get("alpha", {}).get("value") == f.power_laws["L(C)"].alpha.value
    assert "approach2" in f and "nope" not in f and set(f["skipped"]) == {"approach1"}  # no size has a curve
    assert F.predict(f["approach3"], 1e21).to_json() == F.predict(f.approach3, 1e21).to_json()


def test_records_write_non_finite_values_as_null():
    assert F.Estimate(2.0).to_json() == {"value": 2.0}
    assert F.Estimate(float("nan"), (1.0, float("inf"))).to_json() == {
        "value": None, "interval": [1.0, None]}
    assert F.Prediction(C=[1e20], loss=[np.float64(2.5)]).to_json() == {"C": [1e20],
                                                                        "loss": [2.5]}
