"""benchmarks/bench_vs_nanogpt.py without nanoGPT: the dataset it builds is jaxlm's own token
stream, nanoGPT's log lines parse, a bad --nanogpt path is one argparse line, the jaxlm command
is a valid config, and the whole harness runs against fake nanoGPT and jaxlm scripts."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import bench_vs_nanogpt as bench  # noqa: E402

from jaxlm.config import load_config  # noqa: E402
from jaxlm.data.pipeline import train_iterator  # noqa: E402
from jaxlm.data.tokenizers import ByteTokenizer  # noqa: E402

DOCS = [f"def f{i}():\n    return {i} * 'café'  # naïve {'x' * (i % 7)}\n" for i in range(40)]

# captured from nanoGPT 3adf61e (train.py with --log_interval=1 --eval_iters=0)
NANOGPT_LOG = """\
tokens per iteration will be: 768
found vocab_size = 259 (inside data/jaxlm_bytes/meta.pkl)
number of parameters: 0.82M
using fused AdamW: False
step 0: train loss nan, val loss nan
iter 0: loss 5.3722, time 3486.02ms, mfu -100.00%
iter 1: loss 5.0364, time 1527.59ms, mfu -100.00%
iter 12: loss 2.5612, time 15.32ms, mfu 0.51%
"""


def test_data_is_jaxlms_first_epoch_stream_and_round_trips(tmp_path):
    n = bench.build_data(tmp_path, DOCS, DOCS[:3], tokens=10**6, seed=0)
    train = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    assert n == len(train) == sum(len(d.encode()) + 1 for d in DOCS)
    assert pickle.load(open(tmp_path / "meta.pkl", "rb"))["vocab_size"] == 259
    # the same tokens, in the same order, as jaxlm's pipeline packs into rows (before shuffling
    # rows within windows)
    it = train_iterator(DOCS, ByteTokenizer(), seq_len=15, global_batch=2, seed=0,
                        shuffle_window=0)
    rows = np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], 1).ravel()
                           for b in (next(it) for _ in range(20))])
    assert len(rows) == 640 and np.array_equal(train[:640], rows)
    # every document's bytes come back, EOS after each
    ends = np.flatnonzero(train == ByteTokenizer.eos_id)
    docs = [ByteTokenizer().decode(d) for d in np.split(train, ends + 1)[:-1]]
    assert sorted(docs) == sorted(DOCS) and docs != DOCS  # shuffled, as jaxlm reads them
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    assert ByteTokenizer().decode(val[val != 1]) == "".join(DOCS[:3])


def test_data_is_cut_at_the_token_budget(tmp_path):
    assert bench.build_data(tmp_path, DOCS, DOCS[:3], tokens=100, seed=0) == 100
    assert (tmp_path / "train.bin").stat().st_size == 200


def test_nanogpt_log_lines_parse():
    parsed = [bench.parse_iter_line(x) for x in NANOGPT_LOG.splitlines()]
    assert [p for p in parsed if p] == [(0, 5.3722, 3486.02), (1, 5.0364, 1527.59),
                                        (12, 2.5612, 15.32)]


def test_missing_or_wrong_checkout_is_one_argparse_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args([])
    assert e.value.code == 2 and "required: --nanogpt" in capsys.readouterr().err
    (tmp_path / "train.py").write_text("")
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--nanogpt", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and err[-1].endswith(
        f"--nanogpt {tmp_path} is not a nanoGPT checkout (no model.py, configurator.py)")


@pytest.mark.parametrize("shape", ["cpu", "quickstart"])
def test_jaxlm_command_is_a_valid_config_matching_the_shape(shape, tmp_path):
    s = bench.shapes()[shape]
    cmd = bench.jaxlm_cmd(s, 30, tmp_path)
    cfg = load_config(None, cmd[4:])
    assert (cfg.model.n_layers, cfg.model.d_model, cfg.train.batch_size, cfg.data.seq_len) == \
        (s.n_layer, s.n_embd, s.batch, s.block)
    assert cfg.optim.warmup_steps == 29 and cfg.model.use_bias == s.bias
    nano = dict(a[2:].split("=") for a in bench.nanogpt_cmd(s, 30)[2:])
    assert (nano["max_iters"], nano["warmup_iters"], nano["bias"]) == ("29", "29", str(s.bias))
    assert nano["learning_rate"] == repr(s.lr) and "." in nano["grad_clip"]  # floats stay floats


FAKE_NANOGPT = """\
import os, pickle, sys
args = dict(a[2:].split("=") for a in sys.argv[1:])
assert args["device"] == "cpu" and args["compile"] == "False" and args["eval_iters"] == "0"
data = os.path.join("data", args["dataset"])
assert pickle.load(open(os.path.join(data, "meta.pkl"), "rb"))["vocab_size"] == 259
assert os.path.getsize(os.path.join(data, "train.bin")) > 0
print("step 0: train loss nan, val loss nan")
for i in range(int(args["max_iters"]) + 1):
    print(f"iter {i}: loss {5 - i / 10:.4f}, time {20 + i % 3:.2f}ms, mfu -100.00%")
"""

FAKE_JAXLM = """\
import json, pathlib, sys
workdir = pathlib.Path(sys.argv[sys.argv.index("--workdir") + 1])
o = dict(a.split("=") for a in sys.argv[3:])
workdir.mkdir(parents=True)
with open(workdir / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"event": "compiled", "step": 1, "compile_time_sec": 0.5}) + "\\n")
    print("compiled the train step in 0.5 s", file=sys.stderr, flush=True)
    for s in range(10, int(o["train.steps"]) + 1, int(o["train.log_every"])):
        f.write(json.dumps({"step": s, "loss": 5 - s / 10, "tokens_per_sec": 1000.0 + s}) + "\\n")
"""


def test_the_harness_end_to_end_on_fake_scripts(tmp_path, monkeypatch, capsys):
    nano = tmp_path / "nanoGPT"
    nano.mkdir()
    (nano / "train.py").write_text(FAKE_NANOGPT)
    (nano / "model.py").write_text("")
    (nano / "configurator.py").write_text("")
    fake_jaxlm = tmp_path / "fake_jaxlm.py"
    fake_jaxlm.write_text(FAKE_JAXLM)
    monkeypatch.setattr(bench, "JAXLM_TRAIN", fake_jaxlm)
    monkeypatch.setattr(bench, "DATA_TOKENS", 20_000)
    bench.main(["--nanogpt", str(nano), "--shape", "cpu", "--steps", "3", "--rounds", "1"])
    out = capsys.readouterr().out
    runs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [r["side"] for r in runs] == ["nanoGPT", "jaxlm"]
    nano_run, jaxlm_run = runs
    # 20 steps: 10 untimed, one timed window of 10 (iterations 10..19 average 21 ms)
    assert nano_run["tokens_per_sec"] == pytest.approx(768 / 0.021)
    assert jaxlm_run["tokens_per_sec"] == 1020.0 and jaxlm_run["first_step_s"] == 0.5
    assert nano_run["losses"] == {"10": 4.1, "20": 3.1}  # iteration 19 is step 20
    assert "| tokens/s, median (min-max) |" in out and "**0.03x**" in out
    assert "nanoGPT not a git checkout" in out
    assert sorted(p.name for p in nano.iterdir()) == ["configurator.py", "model.py", "train.py"]
