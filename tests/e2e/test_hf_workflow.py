"""GPT-2 end to end through the CLI, with its Hugging Face tokenizer (tiny, random, offline):
convert -> generate (greedy text equal to transformers') -> fine-tune (LM and classifier) ->
export back to a folder that transformers loads with its tokenizer; and the refusals: a
weights-only folder, a tokenizer that does not fit the model."""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers

from helpers import TINY, _cmd, _env, _fail_msg, jaxlm_cmd, keyword_rows, run_all
from hf_helpers import hf_dir, save_bpe_tokenizer  # noqa: F401 - hf_dir: a fixture
from jaxlm.data.tokenizers import load_tokenizer
from jaxlm.errors import JaxlmError
from jaxlm.text_generation import TextGenerator
from scaling_helpers import write_csv

MODEL_KEYS = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64"]
TRAIN = [*TINY, *MODEL_KEYS, "train.steps=2", "optim.warmup_steps=0", "train.samples=0",
         "train.batch_size=2", "data.seq_len=32"]


def test_weights_only_folder_and_a_misfit_tokenizer(hf_dir, tmp_path):  # noqa: F811
    from jaxlm.interop import convert

    _, path = hf_dir
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, weights_only)
    notes = []
    out = convert.hf_to_run(weights_only, tmp_path / "b", note=notes.append)
    assert out.tokenizer is None and not (tmp_path / "b" / "jaxlm_tokenizer.json").exists()
    assert "has no tokenizer" in notes[0] and "--tokenizer DIR" in notes[0]
    with pytest.raises(JaxlmError, match="has no tokenizer .*--tokenizer DIR"):
        TextGenerator.from_workdir(tmp_path / "b")
    small_tok = tmp_path / "small_tok"
    save_bpe_tokenizer(small_tok, vocab_size=400)  # more tokens (341 learnt) than the 300
    with pytest.raises(JaxlmError, match="does not fit the model.*holds only 300"):
        convert.hf_to_run(path, tmp_path / "c", tokenizer=small_tok)
    with_tok = convert.hf_to_run(weights_only, tmp_path / "d", tokenizer=path)
    assert with_tok.tokenizer.vocab_size == 300


@pytest.mark.slow
def test_gpt2_with_its_tokenizer_end_to_end(hf_dir, tmp_path):  # noqa: F811
    from jaxlm.interop import convert

    model, path = hf_dir
    tok = transformers.AutoTokenizer.from_pretrained(path)
    run, out = tmp_path / "run", tmp_path / "exported"
    conv = run_all([jaxlm_cmd("convert", "--from-hf", str(path), "--to-workdir", str(run))],
                   env=_env())[0]
    assert conv.returncode == 0 and "tokenizer: Hugging Face" in conv.stdout, conv.stderr

    csv = tmp_path / "labelled.csv"
    write_csv(csv, keyword_rows(24))
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    prompt = "the quick"
    gen, lm, clf = run_all([
        jaxlm_cmd("generate", "--workdir", str(run), "--prompt", prompt, "--max-new-tokens", "12",
                  "--temperature", "0"),
        _cmd("--workdir", str(tmp_path / "lm"), *TRAIN, f"data.corpus={text}",
             f"train.init_from={run}", "--quiet"),
        _cmd("--workdir", str(tmp_path / "clf"), *TRAIN, f"data.corpus={csv}",
             "model.objective=classify", "model.num_labels=2", f"train.init_from={run}",
             "--quiet")], env=_env())
    assert gen.returncode == 0, gen.stderr
    ids = torch.tensor([tok.encode(prompt)])
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    want = tok.decode(model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=12)[0], skip_special_tokens=True)
    assert gen.stdout == f"--- sample 1 ---\n{want}\n"
    assert lm.returncode == 0, _fail_msg(lm)
    assert clf.returncode == 0, _fail_msg(clf)
    for ft in ("lm", "clf"):  # fine-tuned on the weights' own tokenizer
        assert load_tokenizer(tmp_path / ft).vocab() == load_tokenizer(run).vocab()

    exported = convert.run_to_hf(tmp_path / "lm", out)
    assert exported.step == 2 and (out / "tokenizer.json").is_file()
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    back_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert back_tok.encode("héllo wörld") == tok.encode("héllo wörld")
    assert back_tok.eos_token_id == tok.eos_token_id
    mine = TextGenerator.from_pretrained(tmp_path / "lm")(prompt, do_sample=False,
                                                          max_new_tokens=8)
    ids = torch.tensor([back_tok.encode(prompt)])
    back.generation_config.eos_token_id = back.generation_config.pad_token_id = tok.eos_token_id
    with torch.no_grad():
        theirs = back.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=8)
    assert mine[0]["generated_text"] == back_tok.decode(theirs[0], skip_special_tokens=True)
