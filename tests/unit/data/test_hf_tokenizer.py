"""jaxlm.data.hf_tokenizer: Hugging Face tokenizers (tokenizer.json, vocab.json + merges.txt) in
jaxlm's protocol: ids as transformers gives them, exact bytes per token, specials, save/load,
the renamed metadata file (old run directories still read), and the tokenizer checks of
`train.init_from`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from hf_helpers import TOKENIZER_TEXT, VOCAB, save_bpe_tokenizer
from jaxlm.config import DataConfig
from jaxlm.data.hf_tokenizer import HFTokenizer
from jaxlm.data.tokenizers import (
    LEGACY_TOKENIZER_META, TOKENIZER_META, ByteTokenizer, load_tokenizer, select_tokenizer,
)
from jaxlm.errors import JaxlmError

TEXTS = TOKENIZER_TEXT + ["unseen: Ωμέγα ünïcödé 🎉 and  two  spaces ", " ", ""]


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "bpe"
    return path, save_bpe_tokenizer(path)


def test_ids_text_and_specials_match_transformers(hf_tok):
    path, ref = hf_tok
    tok = HFTokenizer.load(path)
    assert tok.vocab_size == len(ref) == VOCAB
    assert tok.eos_id == ref.eos_token_id == 0 and tok.pad_id == tok.eos_id
    assert tok.bos_id == ref.bos_token_id
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids.dtype == np.int32
        assert ids.tolist() == ref.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text == ref.decode(ids.tolist(), skip_special_tokens=True)
    assert tok.decode([tok.eos_id, *tok.encode("hi")]) == "hi"  # specials are skipped


def test_token_bytes_are_exact_utf8_lengths(hf_tok):
    """Summed over a text's ids, bytes per token give its UTF-8 length: bits per byte stays
    exact (byte-level pieces counted as characters would be off for any non-ASCII text)."""
    tok = HFTokenizer.load(hf_tok[0])
    tb = tok.token_bytes()
    assert tb.shape == (tok.vocab_size,) and tb[tok.eos_id] == 0
    for text in TEXTS:
        assert int(tb[tok.encode(text)].sum()) == len(text.encode("utf-8")), text


def test_vocab_and_merges_read_like_tokenizer_json(hf_tok, tmp_path):
    """GPT-2's older layout: vocab.json + merges.txt (no tokenizer.json)."""
    tok = HFTokenizer.load(hf_tok[0])
    tok._tok.model.save(str(tmp_path))
    shutil.copy(hf_tok[0] / "tokenizer_config.json", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "merges.txt", "tokenizer_config.json", "vocab.json"]
    old = HFTokenizer.load(tmp_path)
    assert old.eos_id == tok.eos_id and old.vocab_size == tok.vocab_size
    for text in TEXTS:
        assert old.encode(text).tolist() == tok.encode(text).tolist()
    assert np.array_equal(old.token_bytes(), tok.token_bytes())


def test_saved_into_a_run_directory_and_read_back_by_both(hf_tok, tmp_path):
    import transformers

    HFTokenizer.load(hf_tok[0]).save(tmp_path)
    assert json.loads((tmp_path / TOKENIZER_META).read_text())["type"] == "hf"
    back = load_tokenizer(tmp_path)
    assert isinstance(back, HFTokenizer) and back.encode(TEXTS[1]).tolist() == \
        hf_tok[1].encode(TEXTS[1], add_special_tokens=False)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ref.encode(TEXTS[0]) == back.encode(TEXTS[0]).tolist()


def test_a_folder_without_a_tokenizer_or_with_a_broken_one_is_one_line(tmp_path):
    with pytest.raises(JaxlmError, match="has no Hugging Face tokenizer"):
        HFTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}')
    with pytest.raises(JaxlmError, match="cannot read the tokenizer in") as e:
        HFTokenizer.load(tmp_path)
    assert "\n" not in str(e.value)


def test_old_metadata_name_is_read_and_replaced_on_write(tmp_path):
    """Run directories before the rename hold jaxlm's metadata as tokenizer.json."""
    from jaxlm import rundir

    (tmp_path / LEGACY_TOKENIZER_META).write_text('{"type": "byte"}\n')
    assert rundir.has_tokenizer(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)
    rundir._save_tokenizer(tmp_path, ByteTokenizer())
    assert not (tmp_path / LEGACY_TOKENIZER_META).exists()
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)


def _select(tmp_path, init_from, source_key="train.init_from", **data):
    d = dataclasses.replace(DataConfig(), **data)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return select_tokenizer(d, ["text"], work, init_from, log=lambda m: None,
                            source_key=source_key)


def test_errors_name_the_key_that_gave_the_weights(tmp_path):
    """A branch's trunk comes from train.branch_from: its errors name that key, not init_from."""
    trunk = tmp_path / "trunk"
    trunk.mkdir()
    with pytest.raises(JaxlmError, match=r"^train.branch_from=\S*trunk has no tokenizer"):
        _select(tmp_path, str(trunk), source_key="train.branch_from")


def test_init_from_takes_the_weights_tokenizer_and_refuses_a_mismatch(hf_tok, tmp_path):
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    (weights_only / "config.json").write_text(json.dumps({"vocab_size": VOCAB}))
    with pytest.raises(JaxlmError, match="has no tokenizer.*data.hf_tokenizer=DIR") as e:
        _select(tmp_path, str(weights_only))
    assert "\n" not in str(e.value)
    given = _select(tmp_path, str(weights_only), tokenizer="hf", hf_tokenizer=str(hf_tok[0]))
    assert isinstance(given, HFTokenizer)
    (weights_only / "config.json").write_text(json.dumps({"vocab_size": 50257}))
    with pytest.raises(JaxlmError, match="does not fit the weights.*far larger"):
        _select(tmp_path, str(weights_only), tokenizer="hf", hf_tokenizer=str(hf_tok[0]))
    assert isinstance(_select(tmp_path, str(hf_tok[0])), HFTokenizer)  # the folder's own
    other = tmp_path / "other"
    save_bpe_tokenizer(other, vocab_size=280)
    with pytest.raises(JaxlmError, match="its tokenizer .* differs from the configured"):
        _select(tmp_path, str(hf_tok[0]), tokenizer="hf", hf_tokenizer=str(other))
