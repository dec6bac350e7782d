"""jaxlm.scaling.spec: a spec's structure and its run-config overrides are checked when it
loads, and an error names the spec file and the spec key at fault."""

from __future__ import annotations

import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling import spec as spec_lib
from scaling_helpers import tiny_spec


def _error(path) -> str:
    with pytest.raises(JaxlmError) as info:
        spec_lib.load_spec(path)
    msg = str(info.value)
    assert "\n" not in msg and "None" not in msg, msg
    return msg


@pytest.mark.parametrize("changes, key, kind", [
    ({"base_overrides": ["train.steps=3"]}, "base_overrides", "not a list"),
    ({"families": ["lstm"]}, "families", "not a list"),
    ({"families": {"lstm": [1]}}, "families.lstm", "not a list"),
    ({"families": {"lstm": {"sizes": {"a": 1}}}}, "families.lstm.sizes", "not a mapping"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8, "overrides": ["x"]}]}}},
     "families.lstm.sizes[0].overrides", "not a list"),
    ({"tokens": {"a": 1}}, "tokens", "not a mapping"),
])
def test_a_container_of_the_wrong_kind_is_one_line(tmp_path, changes, key, kind):
    """These were TypeError tracebacks ("Cannot merge incompatible container types")."""
    path = tiny_spec(tmp_path, **changes)
    msg = _error(path)
    assert f"sweep spec key '{key}'" in msg and str(path) in msg and kind in msg, msg


@pytest.mark.parametrize("changes, spec_key, config_key", [
    ({"base_overrides": {"train.bogus": 1}}, "base_overrides", "train.bogus"),
    ({"base_overrides": {"model": {"d_model": "wide"}}}, "base_overrides", "model.d_model"),
    ({"base_overrides": {"model": [1, 2]}}, "base_overrides", "model"),
    ({"families": {"lstm": {"overrides": {"model.bogus": 2},
                            "sizes": [{"n_layers": 1, "d_model": 8}]}}},
     "families.lstm.overrides", "model.bogus"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8,
                                       "overrides": {"optim.lr": "fast"}}]}}},
     "families.lstm.sizes[0].overrides", "optim.lr"),
])
def test_bad_override_names_the_spec_file_and_key(tmp_path, changes, spec_key, config_key):
    """They were reported as command-line overrides (there were none), or as a member's error
    ('INVALID' in the plan) rather than as the spec's."""
    path = tiny_spec(tmp_path, **changes)
    msg = _error(path)
    assert f"config key '{config_key}'" in msg, msg
    assert f"sweep spec {path}, key '{spec_key}'" in msg, msg
    assert "command-line" not in msg


@pytest.mark.parametrize("changes, key", [
    ({"families": {"lstm": {"overrides": {"data": {"tokenizer": "sentencepiece"}},
                            "sizes": [{"n_layers": 1, "d_model": 8}]}}},
     "families.lstm.overrides.data.tokenizer"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8,
                                       "overrides": {"data.seq_len": 8}}]}}},
     "families.lstm.sizes[0].overrides.data.seq_len"),
])
def test_data_keys_outside_base_overrides_are_a_spec_error(tmp_path, changes, key):
    """A family (or size) on other data, tokenizer or seq_len would make the comparison of
    families unfair (issue 15.4)."""
    path = tiny_spec(tmp_path, **changes)
    msg = _error(path)
    assert msg.startswith(f"sweep spec key '{key}': every member trains on the same data"), msg
    assert str(path) in msg


def test_overrides_as_nested_or_dotted_keys(tmp_path):
    spec = spec_lib.load_spec(tiny_spec(tmp_path, base_overrides={
        "train": {"log_every": 3}, "train.debug_nan_steps": [2, 4], "data.corpus": "2024-01-01"}))
    assert sorted(spec_lib.dotlist(spec.base_overrides)) == [
        "data.corpus=2024-01-01", "train.debug_nan_steps=[2, 4]", "train.log_every=3"]
