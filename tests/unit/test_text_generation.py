"""jaxlm.text_generation.TextGenerator against Hugging Face on a tiny random GPT-2 with its tiny
BPE tokenizer: greedy text, the text-generation pipeline's records (max_length, several
sequences), repetition penalty and stop strings as `transformers` does them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from hf_helpers import hf_dir  # noqa: F401 - a fixture
from jaxlm.errors import JaxlmError
from jaxlm.generate import penalize_repeats
from jaxlm.text_generation import TextGenerator

PROMPT = "the quick brown"
N = 16  # new tokens everywhere: one compiled loop per sampling mode, shared by the tests

@pytest.fixture(scope="module")
def both(hf_dir):  # noqa: F811
    model, path = hf_dir
    tok = transformers.AutoTokenizer.from_pretrained(path)
    # the tokenizer's EOS (not GPT-2's 50256, outside this vocabulary) ends a sample
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    return model, tok, TextGenerator.from_pretrained(path)


def _hf_text(model, tok, prompt: str, **kw) -> str:
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw)
    return tok.decode(out[0], skip_special_tokens=True)


def test_greedy_records_equal_the_pipeline(both):
    model, tok, gen = both
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    # (the pipeline's own default max_new_tokens=256 would win over max_length)
    n_prompt = len(tok.encode(PROMPT))
    for kw in ({"max_length": n_prompt + N, "max_new_tokens": None}, {"max_new_tokens": N}):
        want = pipe(PROMPT, do_sample=False, **kw)
        assert gen(PROMPT, do_sample=False, **kw) == want, kw
    want = pipe(PROMPT, do_sample=False, max_new_tokens=N, return_full_text=False)
    assert gen(PROMPT, do_sample=False, max_new_tokens=N, return_full_text=False) == want
    assert len(tok.encode(want[0]["generated_text"])) > 1  # not an empty continuation


def test_repetition_penalty_matches_transformers(both):
    model, tok, gen = both
    for penalty in (1.5, 0.7):
        want = _hf_text(model, tok, PROMPT, max_new_tokens=N, repetition_penalty=penalty)
        got = gen(PROMPT, do_sample=False, max_new_tokens=N, repetition_penalty=penalty)
        assert got[0]["generated_text"] == want, penalty
    plain = gen(PROMPT, do_sample=False, max_new_tokens=N)[0]["generated_text"]
    assert plain != gen(PROMPT, do_sample=False, max_new_tokens=N,
                        repetition_penalty=1.5)[0]["generated_text"]


def test_penalty_math_is_transformers_processor():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    ids = rng.integers(0, 50, (3, 7))
    proc = transformers.RepetitionPenaltyLogitsProcessor(penalty=1.7)
    want = proc(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
    seen = np.zeros((3, 50), bool)
    np.put_along_axis(seen, ids, True, axis=1)
    np.testing.assert_allclose(np.asarray(penalize_repeats(logits, seen, 1.7)), want, rtol=1e-6)


def test_stop_strings_end_a_sample_after_the_token_that_completes_them(both):
    model, tok, gen = both
    full = gen(PROMPT, do_sample=False, max_new_tokens=N,
               return_full_text=False)[0]["generated_text"]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip() and full.index(stop) > 0
    got = gen(PROMPT, do_sample=False, max_new_tokens=N, stop_strings=[stop, "\u2603"],
              return_full_text=False)[0]["generated_text"]
    assert stop in got and full.startswith(got) and len(got) < len(full)
    assert stop not in got[:-1] or got.index(stop) + len(stop) > len(got) - 8  # ends just after
    want = _hf_text(model, tok, PROMPT, max_new_tokens=N, stop_strings=[stop], tokenizer=tok)
    assert PROMPT + got == want


def test_several_prompts_and_sequences_are_grouped_records(both):
    _, _, gen = both
    out = gen([PROMPT, "hello"], max_new_tokens=N, num_return_sequences=2, seed=3)
    assert [len(g) for g in out] == [2, 2]
    assert out[1][0]["generated_text"].startswith("hello")
    with pytest.raises(JaxlmError, match="repetition_penalty"):
        gen(PROMPT, max_new_tokens=N, repetition_penalty=0.0)
    with pytest.raises(JaxlmError, match="leaves no room"):
        gen(PROMPT, max_length=2)


def test_weights_only_folder_needs_a_tokenizer(hf_dir, tmp_path):  # noqa: F811
    import shutil

    _, path = hf_dir
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path)
    with pytest.raises(JaxlmError, match="has no tokenizer.*tokenizer=DIR"):
        TextGenerator.from_pretrained(tmp_path)
    gen = TextGenerator.from_pretrained(tmp_path, tokenizer=path)
    assert gen.tokenizer.vocab_size == gen.config.vocab_size and gen.tokenizer.eos_id == 0
