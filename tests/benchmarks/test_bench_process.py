"""benchmarks/bench_process.py: both sides of a comparison run `python train.py` in their own
process with the setting's environment, and the table reports what each run measured."""

from __future__ import annotations

import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import bench_process as bench  # noqa: E402

SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=32",
         "data.seq_len=32", "train.batch_size=4", "optim.warmup_steps=1"]


def test_each_side_is_a_real_train_run_and_the_table_compares_them(tmp_path, monkeypatch):
    seen = []
    real = bench.subprocess.run

    def spy(cmd, **kw):
        seen.append({k: kw["env"].get(k) for k in ("JAXLM_MALLOC_TUNING", "JAXLM_CPU_DEVICES")})
        return real(cmd, **kw)

    monkeypatch.setattr(bench.subprocess, "run", spy)
    monkeypatch.setenv("JAXLM_CPU_DEVICES", "1")  # the caller's own setting is not inherited
    results = {}
    for (label, env), sub in zip(bench.COMPARISONS["malloc"], ("off", "on")):
        results[label] = [bench.run(env, 40, SMALL, tmp_path / sub)]
    assert seen == [{"JAXLM_MALLOC_TUNING": "0", "JAXLM_CPU_DEVICES": None},
                    {"JAXLM_MALLOC_TUNING": None, "JAXLM_CPU_DEVICES": None}]
    for (r,) in results.values():
        assert r["tokens_per_sec"] > 0 and r["user_s"] > 0 and r["page_faults"] > 0
    text = bench.table(results, "glibc's malloc as it comes")
    rows = [line for line in text.splitlines() if line.startswith("| glibc") or
            line.startswith("| freed")]
    assert len(rows) == 2 and "| 1.00x |" in rows[0]
