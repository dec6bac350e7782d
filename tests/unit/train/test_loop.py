"""jaxlm.train.loop in-process: MFU logged, and prefetching keeps the data order."""

from __future__ import annotations

import pytest

from jaxlm import config as config_lib

from helpers import tensorboard_tags


def test_train_logs_mfu_and_prefetch_keeps_the_data_order(tmp_path, synthetic_docs):
    from jaxlm.train.loop import train
    from jaxlm.train.metrics import load_metrics

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(synthetic_docs):
        (corpus / f"{i}.txt").write_text(doc)
    base = [f"data.corpus={corpus}", "data.seq_len=32", "model.d_model=32", "model.n_layers=1",
            "model.n_heads=2", "model.max_seq_len=32", "train.batch_size=4", "train.steps=4",
            "train.log_every=1", "optim.warmup_steps=1", "train.eval_every=0",
            "train.final_eval_batches=1", "train.samples=0", "train.checkpoint_every=0"]
    losses = {}
    for prefetch in (0, 2):
        cfg = config_lib.load_config(None, base + [f"train.prefetch={prefetch}"])
        seen = []
        train(cfg, tmp_path / f"p{prefetch}", quiet=True, on_log=seen.append)
        records = load_metrics(tmp_path / f"p{prefetch}")
        # on_log got exactly the step records and the final one, as written
        assert [r["step"] for r in seen] == [r["step"] for r in records if "step" in r
                                              and r.get("event") in (None, "final")]
        assert seen[-1]["event"] == "final" and seen[0]["loss"] == records[2]["loss"]
        steps = [r for r in records if "step" in r and "event" not in r]
        losses[prefetch] = [r["loss"] for r in steps]
        start = records[0]
        assert start["event"] == "start" and start["attention"] == "xla"
        assert start["peak_flops_source"].startswith("measured float32 matmul roof")
        final = records[-1]  # the roof MFU is measured against, beside the MFU (issue 21.17)
        assert final["event"] == "final" and final["peak_flops"] == start["peak_flops"]
        assert final["peak_flops_source"] == start["peak_flops_source"]
        assert start["model_flops_per_token"] > start["flops_per_token"] > 0
        assert any(r.get("event") == "compiled" and r["compile_time_sec"] > 0 for r in records)
        for r in steps[1:]:
            assert r["step_time_sec"] > 0 and r["tokens_per_sec"] > 0
            assert r["mfu"] == pytest.approx(
                r["tokens_per_sec"] * start["model_flops_per_token"] / start["peak_flops"])
            assert 0 < r["mfu"] < 1
        tags = tensorboard_tags(tmp_path / f"p{prefetch}" / "tensorboard")
        assert {"train/loss", "train/learning_rate", "perf/tokens_per_sec", "perf/mfu",
                "perf/step_time_sec", "perf/compile_time_sec", "eval/loss", "eval/bpb"} <= tags
    assert losses[0] == losses[2]
