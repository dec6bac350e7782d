"""The sweep driver (jaxlm.scaling.sweep): spec parsing, member expansion, runs.csv,
failures and preemption (with a fake trainer), the LSTM's FLOPs."""

from __future__ import annotations

import math

import pytest

from jaxlm import flops
from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.scaling import sweep
from jaxlm.train.loop import RunResult
from scaling_helpers import rows, tiny_spec, write_spec


# ----------------------------------------------------------------------------- expansion

def test_smoke_spec_expands(repo_root):
    spec = sweep.load_spec(repo_root / "configs/sweeps/smoke.yaml")
    members = sweep.expand(spec)
    assert [m.name for m in members] == [
        "transformer-L1-d16-D1.28e3", "transformer-L1-d32-D1.28e3", "lstm-L1-d16-D1.28e3"]
    for m in members:
        assert m.steps == 10 and m.batch == 4 and m.tokens == 1280 and m.error is None
        assert m.flops == pytest.approx(flops.flops_per_token(
            ModelConfig(family=m.family, n_layers=m.n_layers, d_model=m.d_model), m.params,
            m.seq_len) * m.tokens)
        # lr = 3e-3 * (N / 1e4)^-0.1, capped at 5e-3
        assert m.lr == pytest.approx(min(5e-3, 3e-3 * (m.params / 1e4) ** -0.1), rel=1e-3)
    cfg = sweep.member_config(spec, members[1])
    assert (cfg.model.n_heads, cfg.model.d_model, cfg.train.steps, cfg.optim.warmup_steps) == (
        2, 32, 10, 2)


def test_sweep_module_keeps_the_names_its_callers_use():
    """`jaxlm sweep`, the notebooks and these tests import from jaxlm.scaling.sweep; the names
    live in spec (schema), plan (expansion) and results (runs.csv)."""
    from jaxlm.scaling import plan, results, spec

    for mod, names in ((spec, ["SweepSpec", "load_spec", "validate_spec", "write_spec_copy"]),
                       (plan, ["Member", "expand", "worker_members", "member_config",
                               "plan_table", "n_heads_for", "model_param_counts"]),
                       (results, ["RUNS_CSV", "COLUMNS", "read_rows", "append_row"])):
        for name in names:
            assert getattr(sweep, name) is getattr(mod, name), name
    assert callable(sweep.run_sweep)


def test_head_rule():
    assert sweep.n_heads_for(64, 64) == 1
    assert sweep.n_heads_for(256, 64) == 4
    assert sweep.n_heads_for(32, 64) == 1  # tiny models: one head of d_model
    assert sweep.n_heads_for(80, 32) == 2  # lowered until it divides
    assert sweep.n_heads_for(96, 64) == 1


def test_param_targets_and_isoflop(tmp_path):
    spec = sweep.load_spec(tiny_spec(
        tmp_path, tokens=[],
        families={"transformer": {"head_dim": 16, "width_multiple": 8, "max_layers": 4,
                                  "sizes": [{"params": 3.0e4}, {"params": 1.2e5, "n_layers": 2}]},
                  "lstm": {"width_multiple": 8, "max_layers": 2, "sizes": [{"params": 5.0e4}]}},
        isoflop={"budgets": [1.0e10, 3.0e10], "min_steps": 5, "flops_rule": "6N"}))
    members = sweep.expand(spec)
    targets = {"transformer": [3.0e4, 1.2e5], "lstm": [5.0e4]}
    seen = set()
    for m in members:
        want = [t for t in targets[m.family] if abs(math.log(m.params / t)) < math.log(1.1)]
        assert want, (m.name, m.params)  # every member within 10% of a target
        seen.add((m.family, want[0]))
        # D = C / (6 N), rounded to whole steps of batch * seq_len tokens
        d = m.budget / (6 * m.params)
        assert m.steps == max(1, round(d / (2 * 16))) and m.tokens == m.steps * 2 * 16
        assert m.name.endswith(f"-C{'1e10' if m.budget == 1e10 else '3e10'}")
        # the parameter count is the model's own
        total, non_embed = sweep.model_param_counts(ModelConfig(
            family=m.family, n_layers=m.n_layers, d_model=m.d_model, vocab_size=259,
            max_seq_len=16, n_heads=sweep.n_heads_for(m.d_model, 16)))
        assert (m.params, m.params_total) == (non_embed, total)
    assert seen == {("transformer", 3.0e4), ("transformer", 1.2e5), ("lstm", 5.0e4)}
    assert [m.n_layers for m in members if m.name.startswith("transformer")][2] == 2  # fixed L
    # min_steps leaves out a size too large for the smallest budget
    big = sweep.load_spec(tiny_spec(tmp_path, tokens=[], isoflop={"budgets": [1e10],
                                                                  "min_steps": 10**6}))
    assert sweep.expand(big) == []


def test_counter_flops_rule(tmp_path):
    spec = sweep.load_spec(tiny_spec(tmp_path, tokens=[],
                                     isoflop={"budgets": [1e10], "flops_rule": "counter",
                                              "min_steps": 1}))
    for m in sweep.expand(spec):  # the FLOP counter (attention included) meets the budget
        assert m.flops == pytest.approx(m.budget, rel=0.02)


def test_lr_and_batch_rules(tmp_path):
    spec = sweep.load_spec(tiny_spec(
        tmp_path, lr={"value": 1e-2, "ref_params": 1e3, "exponent": -0.5, "max": 3e-3},
        batch_size={"value": 2, "ref_params": 1e3, "exponent": 0.5, "max": 8}))
    by = {m.family: m for m in sweep.expand(spec)}
    for m in by.values():
        assert m.lr == pytest.approx(min(3e-3, 1e-2 * (m.params / 1e3) ** -0.5), rel=1e-3)
        assert m.batch == min(8, round(2 * (m.params / 1e3) ** 0.5))
    # a family's own rule wins over the sweep's
    spec = sweep.load_spec(tiny_spec(tmp_path, families={
        "lstm": {"lr": {"value": 7e-3}, "sizes": [{"n_layers": 1, "d_model": 8}]}}))
    assert sweep.expand(spec)[0].lr == pytest.approx(7e-3)


def test_worker_split_partitions(tmp_path):
    spec = sweep.load_spec(tiny_spec(tmp_path, tokens=[128, 256, 512], seeds=[0, 1]))
    members = sweep.expand(spec)
    assert len(members) == 2 * 3 * 2 and len({m.name for m in members}) == 12
    assert any(m.name.endswith("-s1") for m in members)
    for n in (1, 2, 3, 5):
        parts = [sweep.worker_members(members, i, n) for i in range(n)]
        assert sorted(m.name for p in parts for m in p) == sorted(m.name for m in members)
        assert parts[0][0] is members[0]
    with pytest.raises(JaxlmError, match="--worker"):
        sweep.worker_members(members, 2, 2)


@pytest.mark.parametrize("spec, match", [
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}}, "tokens": [1],
      "bogus": 1}, "unknown sweep spec key 'bogus'"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "width": 8}]}}, "tokens": [1]},
     r"unknown sweep spec key 'families.lstm.sizes\[0\].width'"),
    ({"families": {"rnn": {"sizes": [{"n_layers": 1, "d_model": 8}]}}, "tokens": [1]},
     "'families.rnn' is not a model family"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}}}, "exactly one"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1}]}}, "tokens": [1]},
     r"sizes\[0\]' needs n_layers and d_model, or params"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}}, "tokens": [1],
      "isoflop": {"budgets": [1e9]}}, "exactly one"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}},
      "isoflop": {"budgets": [1e9], "flops_rule": "7N"}}, "isoflop.flops_rule"),
    ({"families": {"lstm": {"sizes": [{"n_layers": 1, "d_model": 8}]}}, "tokens": [1],
      "lr": {"value": "fast"}}, "bad value for sweep spec key 'lr.value'"),
])
def test_bad_spec_is_one_clear_error(tmp_path, spec, match):
    path = write_spec(tmp_path, **spec)
    with pytest.raises(JaxlmError, match=match):
        sweep.load_spec(path)


# ----------------------------------------------------------------------------- running

def _fake_result(cfg, workdir, preempted=False):
    return RunResult(workdir, cfg, cfg.train.steps, {"eval_loss": 2.0, "eval_bpb": 2.9}, [],
                     1.0, 10.0, None, preempted=preempted)


def test_failed_and_preempted_members_with_a_fake_trainer(tmp_path):
    """Local launcher: largest member first; a training error is recorded failed; a preempted
    member (this process was signalled) stops the sweep; a re-run does the rest."""
    spec = sweep.load_spec(tiny_spec(tmp_path, tokens=[128, 256, 512]))
    members = sweep.expand(spec)
    order = [m.name for m in sorted(members, key=lambda m: -m.flops)]
    assert order != [m.name for m in members]  # the plan's order is not the run order
    calls = []

    def trainer(cfg, workdir, quiet):
        calls.append(workdir.name)
        if workdir.name == order[0]:
            raise RuntimeError("out of memory\nsecond line")
        if workdir.name == order[3]:
            return _fake_result(cfg, workdir, preempted=True)
        return _fake_result(cfg, workdir)

    out = sweep.run_sweep(spec, members, tmp_path / "w", train_fn=trainer, show=False)
    assert calls == order[:4]
    assert out.preempted == order[3] and out.failed == [order[0]]
    got = {r["name"]: r for r in rows(tmp_path / "w" / "runs.csv")}
    assert [r["name"] for r in rows(tmp_path / "w" / "runs.csv")] == [
        m.name for m in members if m.name in order[:4]]  # runs.csv in the plan's order
    assert got[order[0]]["status"] == "failed"
    assert got[order[0]]["error"] == "RuntimeError: out of memory"
    assert got[order[3]]["status"] == "preempted"
    assert [got[n]["status"] for n in order[1:3]] == ["ok", "ok"]
    # what a fair comparison of families needs: the member's data, tokenizer and FLOP rule
    assert [got[order[1]][k] for k in ("corpus", "tokenizer", "flops_rule")] == [
        "stdlib", "byte", "counter"]
    assert set(order[4:]).isdisjoint(got)  # the sweep stopped at the preempted member
    # re-run: the preempted member and the rest run; ok and failed ones do not
    out = sweep.run_sweep(spec, members, tmp_path / "w", train_fn=lambda c, w, quiet:
                          _fake_result(c, w), show=False)
    assert out.ran == order[3:] and out.preempted is None
    assert sweep.read_rows(tmp_path / "w" / "runs.csv")[order[3]]["status"] == "ok"
    out = sweep.run_sweep(spec, members, tmp_path / "w", train_fn=lambda c, w, quiet:
                          _fake_result(c, w), show=False, retry_failed=True)
    assert out.ran == [order[0]]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # fork: the children touch no JAX
def test_concurrent_appends_keep_whole_rows(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "runs.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    got = rows(path)
    assert len(got) == 4 * 50 and all(r["status"] == "ok" and r["error"] == "x" * 200
                                      for r in got)
    assert list(got[0]) == list(sweep.COLUMNS)


def _append_many(path, worker):
    for i in range(50):
        sweep.append_row(path, {"name": f"w{worker}-{i}", "status": "ok", "error": "x" * 200})


# ----------------------------------------------------------------------------- FLOPs

def test_lstm_flops_are_exact():
    """Every LSTM weight is used once per token in a matmul or add (input and recurrent
    kernels, both biases); no attention term. 6 = forward (2) + backward (4)."""
    for n_layers, h in ((1, 8), (2, 24)):
        m = ModelConfig(family="lstm", n_layers=n_layers, d_model=h, vocab_size=259,
                        tie_embeddings=False)
        total, non_embed = sweep.model_param_counts(m)
        assert non_embed == n_layers * (4 * h * h + 4 * h * h + 8 * h)
        assert total == non_embed + 259 * h + (h * 259 + 259)
        assert flops.flops_per_token(m, non_embed, 128) == 6 * non_embed
    t = ModelConfig(n_layers=2, d_model=16, n_heads=2, vocab_size=259, max_seq_len=32)
    _, n = sweep.model_param_counts(t)
    assert flops.flops_per_token(t, n, 32) == 6 * n + 6 * 2 * 32 * 16
