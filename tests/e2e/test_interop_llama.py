"""A Llama-family checkpoint through jaxlm: `jaxlm convert --from-hf`, fine-tuning through the
normal training loop from the Hugging Face folder (`train.init_from`), export back to a folder
transformers loads. A tiny random LlamaForCausalLM built locally, offline."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from jaxlm.checkpoint import restore_params
from jaxlm.config import load_config
from jaxlm.models import build_model
from jaxlm.train.loop import train

from helpers import _main, losses
from hf_helpers import _hf_logits, _tokens, llama_model, save_bpe_tokenizer

FINE_TUNE = ["data.seq_len=32", "train.batch_size=4", "train.steps=4", "optim.warmup_steps=1",
             "optim.lr=3e-3", "train.log_every=1", "train.eval_every=0", "train.eval_batches=1",
             "train.final_eval_batches=1", "train.checkpoint_every=4", "train.samples=0"]


@pytest.mark.slow
def test_llama_convert_fine_tune_and_export(tmp_path, capsys):
    model = llama_model("llama", num_hidden_layers=1)  # GQA, untied; 1 layer: less to compile
    src, run, ft = tmp_path / "llama", tmp_path / "run", tmp_path / "ft"
    model.save_pretrained(src)
    save_bpe_tokenizer(src)  # a real folder has its tokenizer, which init_from takes along
    code, out, err = _main(capsys, "convert", "--from-hf", str(src), "--to-workdir", str(run))
    assert code == 0, err
    assert "transformer, 1 layers, d_model 64, vocab 300" in out
    cfg = load_config(str(run / "config.yaml"), FINE_TUNE + [f"train.init_from={src}"])
    m = cfg.model
    assert (m.position, m.norm, m.mlp, m.n_kv_heads, m.tie_embeddings, m.use_bias) == (
        "rope", "rmsnorm", "swiglu", 2, False, False)

    train(cfg, ft, quiet=True)
    curve = losses(ft)
    assert sorted(curve) == [1, 2, 3, 4] and all(np.isfinite(list(curve.values())))
    assert curve[4] < curve[1], curve
    params, step = restore_params(ft / "checkpoints")
    assert step == 4

    code, out, err = _main(capsys, "convert", "--from-workdir", str(ft), "--to-hf",
                           str(tmp_path / "out"))
    assert code == 0, err
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == "LlamaForCausalLM"
    tokens = _tokens(2, 24, seed=3)
    ours = np.asarray(build_model(m).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))
    theirs = _hf_logits(back, tokens)
    diff = float(np.abs(theirs - ours).max())
    print(f"fine-tuned Llama exported: max |logits transformers - jaxlm| = {diff:.2e}")
    assert diff < 1e-4
    assert np.abs(theirs - _hf_logits(model, tokens)).max() > 1e-3  # it was fine-tuned


def test_unknown_architecture_is_one_line(tmp_path, capsys):
    bad = tmp_path / "neox"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"],
                                                 "model_type": "gpt_neox"}))
    code, out, err = _main(capsys, "convert", "--from-hf", str(bad), "--to-workdir",
                           str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "architecture 'GPTNeoXForCausalLM' is not supported" in err
    assert "LlamaForCausalLM" in err and not (tmp_path / "run").exists()
