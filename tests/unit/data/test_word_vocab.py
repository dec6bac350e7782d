"""jaxlm.data.word_vocab: word-level vocabularies of imported word-level LMs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlm.data.tokenizers import load_tokenizer
from jaxlm.data.word_vocab import WordTokenizer
from jaxlm.errors import JaxlmError

WORDS = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "café"]


def test_encode_decode_bytes_and_run_directory_round_trip(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    tok = WordTokenizer.load(tmp_path / "vocab.txt")
    assert (tok.vocab_size, tok.eos_id, tok.pad_id, tok.unk_id) == (8, 0, 0, 1)
    text = "the cat sat\non the café mat\n"
    ids = tok.encode(text)
    assert ids.tolist() == [2, 3, 4, 0, 5, 2, 7, 6, 0]
    assert tok.decode(ids) == text
    # bits per byte stays exact for text in the word-level form
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert tok.encode("the  dog\tsat").tolist() == [2, 1, 4]  # unknown -> <unk>
    tok.save(tmp_path)  # what a run directory holds; load_tokenizer reads it back
    again = load_tokenizer(tmp_path)
    assert isinstance(again, WordTokenizer) and again.tokens == WORDS


def test_json_map_and_unknown_without_unk(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"b": 2, "<eos>": 0, "a": 1}))
    tok = WordTokenizer.load(path)
    assert tok.tokens == ["<eos>", "a", "b"] and tok.unk_id is None
    assert tok.encode("a b").tolist() == [1, 2]
    with pytest.raises(JaxlmError, match="'zebra' is not in the vocabulary"):
        tok.encode("a zebra")


@pytest.mark.parametrize("name, body, match", [
    ("missing.txt", None, "does not exist"),
    ("dup.txt", "<eos>\na\na\n", "'a' appears twice"),
    ("space.txt", "<eos>\na b\n", "holds whitespace"),
    ("noeos.txt", "a\nb\n", "no end-of-sequence token"),
    ("bad.json", '{"a": 0,', "not valid JSON"),
    ("gap.json", '{"<eos>": 0, "a": 2}', "ids are not 0..1"),
    ("list.json", '["a"]', "not a JSON object"),
    ("binary.txt", b"\xff\xfe\x00\x81", "cannot be read as UTF-8"),
    ("empty.txt", "", "is empty"),
])
def test_bad_vocabulary_files_are_one_line(tmp_path, name, body, match):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    elif body is not None:
        path.write_text(body)
    with pytest.raises(JaxlmError, match=match) as e:
        WordTokenizer.load(path)
    assert "\n" not in str(e.value)
