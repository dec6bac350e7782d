"""Interop through run directories: the convert CLI both ways, and fine-tuning from
imported weights (`train.init_from`). Everything randomly initialized, offline."""

from __future__ import annotations

import json
import subprocess

import jax
import numpy as np
import pytest
import transformers

from jaxlm.interop import load_hf_gpt2

from helpers import REPO_ROOT, _env, jaxlm_cmd, run_all

from hf_helpers import VOCAB, _hf_logits, _tokens, hf_dir  # noqa: F401 - hf_dir: a fixture


# ---------------------------------------------------------------------------------------------
# the convert CLI and fine-tuning from imported weights


def _jaxlm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(jaxlm_cmd(*args), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_convert_cli_both_ways(hf_dir, tmp_path):
    model, path = hf_dir
    run = tmp_path / "run"
    proc = _jaxlm("convert", "--from-hf", str(path), "--to-workdir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / "config.yaml").is_file() and (run / "params").is_dir()
    assert (run / "tokenizer.json").is_file()  # vocab 300 holds the byte tokenizer
    out = tmp_path / "hf_out"
    # nothing is overwritten; bad combinations are one line
    bad = [
        (["--from-hf", str(path), "--to-workdir", str(run)], "not empty"),
        (["--from-hf", str(path), "--to-hf", str(tmp_path / "x")], "--from-workdir"),
        (["--from-hf", str(tmp_path / "none"), "--to-workdir", str(tmp_path / "y")],
         "does not exist"),
    ]
    # everything below only reads `run`: all processes at once
    gen, back_proc, *errors = run_all(
        [jaxlm_cmd("generate", "--workdir", str(run), "--prompt", "ab", "--max-new-tokens", "5",
                   "--temperature", "0"),
         jaxlm_cmd("convert", "--from-workdir", str(run), "--to-hf", str(out))]
        + [jaxlm_cmd("convert", *args) for args, _ in bad], env=_env())
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("--- sample 1 ---\nab")
    assert back_proc.returncode == 0, back_proc.stderr
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    tokens = _tokens(2, 16)
    np.testing.assert_allclose(_hf_logits(back, tokens), _hf_logits(model, tokens), atol=1e-5)
    for (args, match), proc in zip(bad, errors):
        assert proc.returncode == 2 and match in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_fine_tune_from_hf_folder(hf_dir, tmp_path):
    from jaxlm.checkpoint import restore_params
    from helpers import TINY, _cmd, _fail_msg

    _, path = hf_dir
    model_keys = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4",
                  "model.max_seq_len=64", f"model.vocab_size={VOCAB}"]
    # a learning rate of ~0: the one step leaves the imported weights (not a random init)
    args = [*TINY, *model_keys, "train.steps=1", "optim.warmup_steps=0", "optim.lr=1e-12",
            "train.samples=0", f"train.init_from={path}"]
    # and, at the same time, a model that does not match: refused with one line naming the keys
    proc, mismatch = run_all(
        [_cmd("--workdir", str(tmp_path / "ft"), *args, "--quiet"),
         _cmd("--workdir", str(tmp_path / "ft2"), *TINY, "model.max_seq_len=64",
              "train.steps=1", "optim.warmup_steps=0", f"train.init_from={path}")], env=_env())
    assert proc.returncode == 0, _fail_msg(proc)
    params, step = restore_params(tmp_path / "ft" / "checkpoints")
    _, want = load_hf_gpt2(path)
    assert step == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-8), params, want)
    proc = mismatch
    assert proc.returncode == 2, _fail_msg(proc)
    assert "model.d_model" in proc.stderr and "Traceback" not in proc.stderr


def test_convert_word_level_torch_lstm_then_generate(tmp_path, capsys):
    """The common PyTorch word-level LM (Embedding(V, E) -> LSTM(E, H) -> Linear(H, V), E != H)
    with its vocabulary file: `jaxlm generate` writes torch's greedy continuation as words.
    (The CLI in-process: a subprocess here would be JAX start-up twice.)"""
    import torch

    from jaxlm.data.word_vocab import WordTokenizer
    from helpers import _main

    torch.manual_seed(0)
    words = ["<eos>", "<unk>", "the", "cat", "sat", "on", "a", "mat"]
    emb, lstm, head = torch.nn.Embedding(8, 6), torch.nn.LSTM(6, 10, 2), torch.nn.Linear(10, 8)
    torch.save({**{f"encoder.{k}": v for k, v in emb.state_dict().items()},
                **{f"rnn.{k}": v for k, v in lstm.state_dict().items()},
                **{f"decoder.{k}": v for k, v in head.state_dict().items()}}, tmp_path / "lm.pt")
    (tmp_path / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    run, vocab = tmp_path / "run", str(tmp_path / "vocab.json")
    code, out, err = _main(capsys, "convert", "--from-hf", str(tmp_path), "--vocab", vocab,
                           "--to-workdir", str(tmp_path / "x"))
    assert code == 2 and "--vocab applies to --from-torch-lstm" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = _main(capsys, "convert", "--from-torch-lstm", str(tmp_path / "lm.pt"),
                           "--vocab", vocab, "--to-workdir", str(run))
    assert code == 0 and "tokenizer: word" in out, err
    code, out, err = _main(capsys, "generate", "--workdir", str(run), "--prompt", "the cat",
                           "--max-new-tokens", "7", "--temperature", "0", "--ignore-eos")
    assert code == 0, err
    ids = [2, 3]
    with torch.no_grad():
        for _ in range(7):
            ids.append(int(head(lstm(emb(torch.tensor([ids]).T))[0][-1])[0].argmax()))
    assert out == f"--- sample 1 ---\n{WordTokenizer(words).decode(ids)}\n"
