"""End to end through the command line: `python train.py ...` as a user runs it."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from jaxlm.config import from_dict, load_config, replace
from jaxlm.data.tokenizers import load_tokenizer

from helpers import REPO_ROOT, TINY, _ckpt_steps, _cmd, _env, _fail_msg, _main, _records, \
    _snapshot, _step_records, run_all


def run_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# a tiny GPT on the default (stdlib) corpus: run, resume, continue


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory, synthetic_docs):
    """The GPT run and the LSTM run below, started together (each is mostly one core's work:
    start-up and compiling): name -> (workdir, finished process, its arguments, base dir)."""
    gpt_dir = tmp_path_factory.mktemp("e2e") / "gpt"
    base = tmp_path_factory.mktemp("lstm")
    corpus = base / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(synthetic_docs):
        (corpus / f"doc{i:02d}.txt").write_text(doc, encoding="utf-8")
    lstm_dir = base / "run"
    lstm_args = ["--workdir", str(lstm_dir), *TINY, "train.steps=6", "model.family=lstm",
                 f"data.corpus={corpus}", "data.tokenizer=sentencepiece",
                 "data.sp_vocab_size=300", f"data.cache_dir={base / 'cache'}",
                 "data.validation_fraction=0.2"]
    gpt_args = ["--workdir", str(gpt_dir), *TINY, "train.steps=6"]
    gpt, lstm = run_all([_cmd(*gpt_args), _cmd(*lstm_args)], env=_env(), timeout=600)
    return {"gpt": (gpt_dir, gpt, gpt_args, None), "lstm": (lstm_dir, lstm, lstm_args, base)}


@pytest.fixture(scope="module")
def gpt_run(first_runs):
    workdir, proc, _, _ = first_runs["gpt"]
    assert proc.returncode == 0, _fail_msg(proc)
    return workdir, proc, _snapshot(workdir)


@pytest.mark.slow
def test_run_dir_contents(gpt_run):
    workdir, proc, _ = gpt_run
    assert "Traceback" not in proc.stderr
    assert "finished step 6" in proc.stdout
    for name in ("config.yaml", "metrics.jsonl", "jaxlm_tokenizer.json", "samples.txt"):
        assert (workdir / name).is_file(), name
    events = list((workdir / "tensorboard").glob("events.out.tfevents*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert 6 in _ckpt_steps(workdir) and 3 in _ckpt_steps(workdir)
    samples = (workdir / "samples.txt").read_text()
    assert samples.count("--- sample ") == 1
    assert "--- sample 1 ---\ndef " in samples  # the default prompt starts the sample


@pytest.mark.slow
def test_output_is_plain_lines_and_says_what_it_measured(gpt_run):
    """stderr is a pipe here: progress is plain lines (no carriage returns or cursor codes);
    the summary says over what the final eval ran and what MFU is measured against (21.15,
    21.17)."""
    workdir, proc, _ = gpt_run
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr, proc.stderr[-2000:]
    assert any(line.startswith("train: 6/6 steps (100%)") for line in proc.stderr.splitlines())
    assert "(over the first 2 eval batches (256 tokens), not the whole split)" in proc.stdout
    assert "TFLOP/s, measured float32 matmul roof of this machine" in proc.stdout
    final = [r for r in _records(workdir) if r.get("event") == "final"][-1]
    assert final["eval_batches"] == 2 and final["eval_full_split"] is False
    assert final["steps_run"] == 6 and final["peak_flops"] > 0


@pytest.mark.slow
def test_saved_config_is_resolved(gpt_run):
    workdir, _, _ = gpt_run
    saved = yaml.safe_load((workdir / "config.yaml").read_text())
    assert saved["model"]["vocab_size"] == 259
    expected = replace(load_config(None, TINY + ["train.steps=6"]), **{"model.vocab_size": 259})
    assert from_dict(saved) == expected
    assert json.loads((workdir / "jaxlm_tokenizer.json").read_text())["type"] == "byte"


@pytest.mark.slow
def test_metrics_records(gpt_run):
    workdir, _, _ = gpt_run
    records = _records(workdir)
    steps = _step_records(workdir)
    assert [r["step"] for r in steps] == [2, 3, 4, 6]  # log_every=2, eval at 3, the last step
    for r in steps:
        for key in ("step", "loss", "learning_rate", "tokens_per_sec"):
            assert isinstance(r[key], (int, float)), (key, r)
        assert r["loss"] > 0 and r["tokens_per_sec"] > 0
    evals = [r for r in steps if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3]
    for key in ("eval_loss", "eval_perplexity", "eval_bpb"):
        assert evals[0][key] > 0
    # a byte model: bits per byte = loss / ln 2
    assert evals[0]["eval_bpb"] == pytest.approx(evals[0]["eval_loss"] / 0.6931471805599453,
                                                 rel=1e-5)
    finals = [r for r in records if r.get("event") == "final"]
    assert len(finals) == 1 and finals[0]["step"] == 6
    for key in ("eval_loss", "eval_perplexity", "eval_bpb"):
        assert finals[0][key] > 0
    assert records[0].get("event") == "start" and records[0]["vocab_size"] == 259


# ---------------------------------------------------------------------------------------------
# LSTM with a trained SentencePiece tokenizer on a local text corpus (run with the GPT above)


@pytest.fixture(scope="module")
def lstm_run(first_runs):
    workdir, proc, args, base = first_runs["lstm"]
    assert proc.returncode == 0, _fail_msg(proc)
    return workdir, proc, args, base


@pytest.mark.slow
def test_lstm_sentencepiece_run(lstm_run):
    workdir, proc, _, base = lstm_run
    assert "Traceback" not in proc.stderr
    assert "finished step 6" in proc.stdout
    assert (workdir / "tokenizer.model").is_file()
    meta = json.loads((workdir / "jaxlm_tokenizer.json").read_text())
    assert meta["type"] == "sentencepiece"
    saved = yaml.safe_load((workdir / "config.yaml").read_text())
    assert saved["model"]["family"] == "lstm"
    assert saved["model"]["vocab_size"] == 300
    tok = load_tokenizer(workdir)
    assert tok.vocab_size == 300
    assert tok.decode(tok.encode("café 日本語\tx  y")) == "café 日本語\tx  y"
    finals = [r for r in _records(workdir) if r.get("event") == "final"]
    assert len(finals) == 1 and finals[0]["eval_bpb"] > 0
    # bytes, not tokens, behind bpb: a SentencePiece token covers more than one byte on average
    assert finals[0]["eval_bytes"] > finals[0]["eval_tokens"]
    assert _ckpt_steps(workdir)[-1] == 6
    assert list((base / "cache").rglob("*.array_record*")), "the corpus was prepared in cache_dir"
    assert (workdir / "samples.txt").read_text().startswith("--- sample 1 ---")


# ---------------------------------------------------------------------------------------------
# the same commands again: resume, continue; the LSTM resumes with its tokenizer


def _rerun(workdir, steps: int):
    """The same command again on an existing run directory, with train.steps=`steps`."""
    proc = run_train("--workdir", str(workdir), *TINY, f"train.steps={steps}")
    assert proc.returncode == 0, _fail_msg(proc)
    return workdir, proc


@pytest.fixture(scope="module")
def resumed_run(gpt_run):
    return _rerun(gpt_run[0], 6)


@pytest.mark.slow
def test_rerun_resumes(resumed_run):
    workdir, proc = resumed_run
    assert "Traceback" not in proc.stderr
    assert "resum" in (proc.stdout + proc.stderr).lower()
    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == [2, 3, 4, 6]  # no step trained or logged twice
    assert "compiled" not in [r.get("event") for r in _records(workdir)[-3:]]  # nothing trained
    starts = [r for r in _records(workdir) if r.get("event") == "start"]
    assert [r["start_step"] for r in starts] == [0, 6]
    # nothing trained: no throughput numbers, the run says it is finished (issue 21.15)
    assert "the run is already finished at step 6 (train.steps=6)" in proc.stdout
    assert "tokens/s" not in proc.stdout and "MFU" not in proc.stdout
    final = [r for r in _records(workdir) if r.get("event") == "final"][-1]
    assert final["steps_run"] == 0 and "tokens_per_sec" not in final and "mfu" not in final


@pytest.mark.slow
def test_eval_command_shows_progress_and_what_it_measured(resumed_run, capsys):
    """`jaxlm eval` (stderr not a terminal: a plain progress line) says how many batches and
    tokens it measured and whether that is the whole split (issue 21.15)."""
    workdir, _ = resumed_run
    code, out, err = _main(capsys, "eval", "--workdir", str(workdir), "--max-batches", "3")
    assert code == 0, err[-3000:]
    assert err.startswith("eval: 3/3 batches (100%)") and "\r" not in err
    assert "eval_batches: 3" in out and "eval_full_split: False" in out
    assert "measured over: the first 3 eval batches (384 tokens), not the whole split" in out


@pytest.fixture(scope="module")
def last_runs(resumed_run, lstm_run):
    """Both runs again, at once: the GPT continued to 8 steps, the LSTM (whose tokenizer file is
    read first) to 7."""
    gpt_dir = resumed_run[0]
    lstm_dir, _, lstm_args, _ = lstm_run
    model_bytes = (lstm_dir / "tokenizer.model").read_bytes()
    gpt, lstm = run_all(
        [_cmd("--workdir", str(gpt_dir), *TINY, "train.steps=8"),
         _cmd(*[a if a != "train.steps=6" else "train.steps=7" for a in lstm_args])],
        env=_env(), timeout=600)
    return {"gpt": (gpt_dir, gpt), "lstm": (lstm_dir, lstm, model_bytes)}


@pytest.fixture(scope="module")
def continued_run(last_runs):
    workdir, proc = last_runs["gpt"]
    assert proc.returncode == 0, _fail_msg(proc)
    return workdir, proc


@pytest.mark.slow
def test_continue_to_more_steps(continued_run):
    workdir, proc = continued_run
    assert "Traceback" not in proc.stderr
    assert "finished step 8" in proc.stdout
    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == sorted(set(steps))  # increasing, no duplicates
    assert steps[-1] == 8 and 6 in steps
    compiled = [r for r in _records(workdir) if r.get("event") == "compiled"]
    assert compiled[-1]["step"] == 7  # training picked up at step 7, not 1
    finals = [r for r in _records(workdir) if r.get("event") == "final"]
    assert finals[-1]["step"] == 8
    assert _ckpt_steps(workdir)[-1] == 8
    saved = yaml.safe_load((workdir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 8


@pytest.mark.slow
def test_lstm_resume_reuses_tokenizer(last_runs):
    workdir, proc, model_bytes = last_runs["lstm"]
    assert proc.returncode == 0, _fail_msg(proc)
    assert "resum" in proc.stderr.lower()
    assert "training a SentencePiece" not in proc.stderr
    assert (workdir / "tokenizer.model").read_bytes() == model_bytes
    assert [r["step"] for r in _step_records(workdir)][-1] == 7


def test_help(capsys):
    code, out, err = _main(capsys, "--help")
    assert code == 0, err
    assert "overrides" in out
    assert "key=value" in out
    assert "--workdir" in out and "--config" in out


def test_print_config(tmp_path, capsys):
    code, out, err = _main(capsys, "--workdir", str(tmp_path / "w"), "--print-config",
                           "model.n_layers=3", "optim.lr=3e-4")
    assert code == 0, err
    cfg = from_dict(yaml.safe_load(out))
    assert cfg.model.n_layers == 3 and cfg.optim.lr == pytest.approx(3e-4)
    assert not (tmp_path / "w").exists()
