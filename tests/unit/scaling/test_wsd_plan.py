"""Sweep planning of cooldown branches (spec key wsd) and hyperparameter axes (spec key hp)."""

from __future__ import annotations

import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling import plan, spec as spec_lib
from scaling_helpers import tiny_spec


def _expand(tmp_path, **changes):
    s = spec_lib.load_spec(tiny_spec(tmp_path, **changes))
    return s, plan.expand(s)


def test_each_size_becomes_one_trunk_and_a_branch_per_budget(tmp_path):
    # 16-token rows, batch 2: 320 / 640 / 960 tokens = 10 / 20 / 30 steps; decay 0.2 of each
    s, members = _expand(tmp_path, tokens=[320, 640, 960],
                         wsd={"decay_fraction": 0.2, "decay_shape": "1-sqrt"})
    tf = [m for m in members if m.family == "transformer"]
    assert [m.name for m in tf] == ["transformer-L1-d16-trunk", "transformer-L1-d16-D320",
                                    "transformer-L1-d16-D640", "transformer-L1-d16-D960"]
    trunk, branches = tf[0], tf[1:]
    assert (trunk.role, trunk.steps, trunk.after) == ("trunk", 24, None)
    assert [(b.role, b.steps, b.branch_step, b.after) for b in branches] == [
        ("branch", 10, 8, trunk.name), ("branch", 20, 16, trunk.name),
        ("branch", 30, 24, trunk.name)]
    assert all(m.error is None for m in members)
    assert {m.warmup for m in tf} == {2}  # 0.2 x the shortest branch, the same for all
    tcfg = plan.member_config(s, trunk)
    assert (tcfg.optim.schedule, tcfg.train.checkpoint_at, tcfg.train.keep_checkpoints) == (
        "constant", [8, 16, 24], 4)  # and at the end, 24
    bcfg = plan.member_config(s, branches[1], tmp_path / "sweep")
    assert bcfg.train.branch_from == f"{tmp_path / 'sweep' / 'runs' / trunk.name}@16"
    assert (bcfg.optim.schedule, bcfg.optim.decay_shape, bcfg.optim.decay_fraction,
            bcfg.optim.warmup_steps) == ("wsd", "1-sqrt", 0.2, 2)
    with pytest.raises(JaxlmError, match="needs the sweep's workdir"):
        plan.member_config(s, branches[0])
    # per family a 24-step trunk + decays of 2, 4, 6 steps, vs 10 + 20 + 30 steps
    table = plan.plan_table(members)
    assert "cooldown branches: 2 trunks + 6 branches train 72 steps; 6 separate runs would " \
           "train 120 (40% saved)" in table


def test_hp_axes_cross_every_size_and_budget(tmp_path):
    _, members = _expand(tmp_path, tokens=[320], lr={"value": 1e-3},
                         hp={"lr_scale": [0.5, 1, 2], "b2": [0.95, 0.99]})
    tf = [m for m in members if m.family == "transformer"]
    assert len(tf) == 6 and len({m.name for m in tf}) == 6
    assert sorted({m.lr for m in tf}) == [5e-4, 1e-3, 2e-3]
    assert {m.b2 for m in tf} == {0.95, 0.99}
    m = next(m for m in tf if m.lr == 5e-4 and m.b2 == 0.99)
    assert m.name == "transformer-L1-d16-D320-lr0.5x-b2-0.99"
    assert "optim.b2=0.99" in m.overrides and "optim.lr=0.0005" in m.overrides


@pytest.mark.parametrize("changes, match", [
    ({"wsd": {"decay_fraction": 1.0}}, "wsd.decay_fraction"),
    ({"wsd": {"decay_shape": "square"}}, "wsd.decay_shape"),
    ({"hp": {"lr_scale": [1, 1]}}, "hp.lr_scale' repeats"),
    ({"hp": {"b2": [1.5]}}, "hp.b2' holds 1.5"),
    ({"hp": {"learning_rate": [1]}}, "unknown sweep spec key 'hp.learning_rate'"),
])
def test_bad_recipe_keys_are_named(tmp_path, changes, match):
    with pytest.raises(JaxlmError, match=match):
        spec_lib.load_spec(tiny_spec(tmp_path, **changes))
