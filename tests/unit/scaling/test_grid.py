"""Grid design in the sweep spec (jaxlm.scaling.grid via plan.expand_grid): the tokens-per-
parameter window, fixed-depth and fixed-aspect families, the batch chosen per budget, the
counter FLOPs rule as the default, and one-line spec errors naming the key."""

from __future__ import annotations

import pytest

from jaxlm.errors import JaxlmError
from jaxlm.scaling import grid, sweep
from scaling_helpers import tiny_spec

TARGETS = [{"params": 5e3}, {"params": 2e4}, {"params": 8e4}]


def _expand(tmp_path, families=None, **isoflop):
    families = families or {"transformer": {"head_dim": 8, "width_multiple": 8,
                                            "max_layers": 4, "sizes": TARGETS}}
    spec = sweep.load_spec(tiny_spec(tmp_path, tokens=[], families=families,
                                     batch_size={"value": 8},
                                     isoflop={"budgets": [3e9, 3e10], "min_steps": 1, **isoflop}))
    return sweep.expand_grid(spec)


def test_counter_rule_is_the_default_and_meets_the_budget(tmp_path):
    members, excluded = _expand(tmp_path)
    assert members and not excluded
    for m in members:  # the FLOP counter (attention included), not 6N, spends each budget
        assert m.flops == pytest.approx(m.budget, rel=0.02)
    six = {m.name: m for m in _expand(tmp_path, flops_rule="6N")[0]}
    ratios = [six[m.name].tokens / m.tokens for m in members]
    assert min(ratios) >= 0.99 and max(ratios) > 1.05  # 6N gives small models more compute


def test_tokens_per_param_window_leaves_out_sizes_and_says_why(tmp_path):
    members, excluded = _expand(tmp_path, tokens_per_param=[2, 200])
    for m in members:
        assert 2 <= m.budget / (m.flops / m.tokens) / m.params <= 200
    assert {(e.params, e.budget) for e in excluded}.isdisjoint(
        {(m.params, m.budget) for m in members})
    assert len(members) + len(excluded) == 6 and excluded
    assert all("isoflop.tokens_per_param" in e.reason for e in excluded)
    table = sweep.plan_table(members, excluded)
    assert "left out by the grid rules" in table
    assert excluded[0].name in table and excluded[0].reason in table


def test_a_family_window_overrides_the_isoflop_window_for_that_family_only(tmp_path):
    fams = {"transformer": {"head_dim": 8, "width_multiple": 8, "depth": 1, "sizes": TARGETS},
            "lstm": {"width_multiple": 8, "depth": 1, "sizes": TARGETS,
                     "tokens_per_param": [0.5, 20]}}
    members, excluded = _expand(tmp_path, families=fams, tokens_per_param=[2, 200])
    for fam, (lo, hi) in (("transformer", (2, 200)), ("lstm", (0.5, 20))):
        mine = [m for m in members if m.family == fam]
        assert mine and all(lo <= m.tokens / m.params <= hi for m in mine)
        out = [e for e in excluded if e.family == fam]
        assert out and all(e.reason.endswith(f"max {hi:g}") or e.reason.endswith(f"min {lo:g}")
                           for e in out)
    reasons = {e.family: e.reason for e in excluded}
    assert "families.lstm.tokens_per_param" in reasons["lstm"]
    assert "isoflop.tokens_per_param" in reasons["transformer"]
    # the wide isoflop window alone keeps LSTM sizes the family window leaves out
    both, _ = _expand(tmp_path, families={**fams, "lstm": {**fams["lstm"],
                                                            "tokens_per_param": None}},
                      tokens_per_param=[2, 200])
    assert ({m.name for m in both if m.family == "lstm"}
            != {m.name for m in members if m.family == "lstm"})


def test_fixed_depth_family_varies_only_the_width(tmp_path):
    members, _ = _expand(tmp_path, families={"transformer": {
        "head_dim": 8, "width_multiple": 8, "max_layers": 4, "depth": 3, "sizes": TARGETS}})
    assert {m.n_layers for m in members} == {3}
    assert len({m.d_model for m in members}) == 3
    # without it, the aspect-ratio rule picks 1 layer for the small targets, 2 for the large
    free, _ = _expand(tmp_path)
    assert len({m.n_layers for m in free}) > 1


def test_fixed_aspect_family_keeps_d_model_over_n_layers(tmp_path):
    members, _ = _expand(tmp_path, families={"lstm": {
        "width_multiple": 8, "max_layers": 6, "fixed_aspect": True, "aspect_ratio": 16,
        "sizes": TARGETS}})
    shapes = sorted({(m.n_layers, m.d_model) for m in members})
    assert shapes == [(1, 16), (2, 32), (3, 48)]


def test_batch_is_lowered_per_budget_to_reach_min_steps(tmp_path):
    members, excluded = _expand(tmp_path, min_steps=200, batch_for_min_steps=True)
    assert not excluded
    lowered = [m for m in members if m.batch_rule is not None]
    assert lowered and all(m.batch < m.batch_rule == 8 for m in lowered)
    for m in members:
        assert m.steps >= 200
        if m.batch_rule is not None:  # the largest batch that still gives min_steps
            assert grid.steps_for(m.tokens, m.batch + 1, m.seq_len) < 200
    assert "batch lowered from 8" in sweep.plan_table(members, excluded)
    # without the key the same members are left out by min_steps instead
    plain, out = _expand(tmp_path, min_steps=200)
    assert len(plain) < len(members) and all("isoflop.min_steps" in e.reason for e in out)


def test_a_lowered_batch_is_evaluated_on_the_same_sequences(tmp_path):
    """Evals count batches of the train batch: without more eval batches, a member whose
    batch was lowered would be scored on fewer (and other) held-out tokens than its budget's
    other members, which made the CPU demo's IsoFLOP profiles jump between neighbours."""
    members, _ = _expand(tmp_path, min_steps=200, batch_for_min_steps=True)
    spec = sweep.load_spec(tiny_spec(tmp_path))  # its base config: the members' base
    train = {m.name: sweep.member_config(spec, m).train for m in members}
    kept = [m for m in members if m.batch_rule is None]
    lowered = [m for m in members if m.batch_rule is not None]
    assert kept and lowered
    base = train[kept[0].name]  # the rule's batch: the base config's eval batches
    assert base.eval_batches > 1 and base.final_eval_batches >= 1
    for m in lowered:
        t, sequences = train[m.name], m.batch_rule * base.final_eval_batches
        assert 0 <= t.final_eval_batches * m.batch - sequences < m.batch
        assert 0 <= t.eval_batches * m.batch - m.batch_rule * base.eval_batches < m.batch
    assert grid.same_eval_tokens(type(base)(final_eval_batches=0, eval_batches=3), 8, 3) == [
        "train.eval_batches=8"]  # 0 (the whole split) stays the whole split


def test_batch_for_steps_rule():
    assert grid.batch_for_steps(16 * 8 * 100, 8, 16, 50) == 8  # already enough steps
    assert grid.batch_for_steps(16 * 8 * 100, 8, 16, 200) == 4
    assert grid.batch_for_steps(16 * 8 * 100, 8, 16, 161) == 4  # 5 gives 160 steps
    assert grid.batch_for_steps(16 * 10, 8, 16, 20) == 8  # unreachable: min_steps leaves it out


@pytest.mark.parametrize("families, isoflop, key", [
    ({"lstm": {"depth": 0, "sizes": [{"params": 1e4}]}}, {}, "families.lstm.depth"),
    ({"lstm": {"depth": 2, "fixed_aspect": True, "sizes": [{"params": 1e4}]}}, {},
     "families.lstm.depth"),
    ({"lstm": {"depth": 2, "sizes": [{"n_layers": 3, "d_model": 8}]}}, {},
     r"families.lstm.sizes\[0\].n_layers"),
    ({"lstm": {"fixed_aspect": True, "sizes": [{"params": 1e4, "n_layers": 2}]}}, {},
     r"families.lstm.sizes\[0\].n_layers"),
    ({}, {"tokens_per_param": [20]}, "isoflop.tokens_per_param"),
    ({}, {"tokens_per_param": [50, 5]}, "isoflop.tokens_per_param"),
    ({}, {"min_steps": 0}, "isoflop.min_steps"),
    ({}, {"batch_for_min_steps": "maybe"}, "isoflop.batch_for_min_steps"),
])
def test_grid_spec_errors_name_the_key(tmp_path, families, isoflop, key):
    families = families or {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}}
    path = tiny_spec(tmp_path, tokens=[], families=families,
                     isoflop={"budgets": [1e9], **isoflop})
    with pytest.raises(JaxlmError, match=f"'{key}'") as e:
        sweep.load_spec(path)
    assert "\n" not in str(e.value)


def test_a_family_window_needs_an_isoflop_sweep_and_min_below_max(tmp_path):
    lstm = {"tokens_per_param": [1, 9], "sizes": [{"n_layers": 1, "d_model": 8}]}
    with pytest.raises(JaxlmError, match="'families.lstm.tokens_per_param' needs an isoflop"):
        sweep.load_spec(tiny_spec(tmp_path, families={"lstm": lstm}))
    for window in ([5, 1], [0, 9], [3]):
        path = tiny_spec(tmp_path, tokens=[], isoflop={"budgets": [1e9]},
                         families={"lstm": {**lstm, "tokens_per_param": window}})
        with pytest.raises(JaxlmError, match=r"'families.lstm.tokens_per_param' must be \[min, "
                                             r"max\] with 0 < min < max") as e:
            sweep.load_spec(path)
        assert "\n" not in str(e.value)


def test_cooldown_branches_honour_the_window_and_the_batch_rule(tmp_path):
    spec = sweep.load_spec(tiny_spec(
        tmp_path, tokens=[], wsd={"decay_fraction": 0.2}, batch_size={"value": 8},
        families={"transformer": {"head_dim": 8, "width_multiple": 8, "depth": 1,
                                  "sizes": TARGETS[:2]}},
        isoflop={"budgets": [3e9, 3e10], "min_steps": 600, "tokens_per_param": [2, 200],
                 "batch_for_min_steps": True}))
    members, excluded = sweep.expand_grid(spec)
    branches = [m for m in members if m.role == "branch"]
    assert branches and excluded
    for m in branches:
        assert 2 <= m.tokens / m.params <= 200 * 1.05 and m.steps >= 600
        trunk = next(t for t in members if t.name == m.after)
        assert trunk.batch == m.batch and trunk.batch_rule == m.batch_rule
        assert (m.batch_rule, m.batch) == (None, 8) or (m.batch_rule == 8 and m.batch < 8)
    assert any(m.batch_rule for m in branches)
