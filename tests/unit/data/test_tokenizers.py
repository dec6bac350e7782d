"""jaxlm.data.tokenizers: byte and SentencePiece tokenizers (round trips, non-ASCII,
specials, training, save and load)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlm.data.tokenizers import (
    ByteTokenizer, SentencePieceTokenizer, load_tokenizer, SP_MODEL_FILE, TOKENIZER_JSON,
)
from jaxlm.errors import JaxlmError


# ---------------------------------------------------------------------------------------------
# tokenizers

TRICKY = [
    "plain ascii",
    "Héllo, wörld! café naïve",
    "日本語のテキスト",
    "emoji 🎉🚀👩‍👩‍👧 done",
    "tab\there\t\tand two tabs",
    "line one\nline two\n\n\nthree newlines",
    "  two leading, three   inner,    four     five trailing     ",
    "windows\r\nline\r\nendings",
    "mixed: café\t日本\n  🎉  x",
    "digits 1234567890 and symbols ~`^{}|\\",
    "",
    " ",
    "\n",
]


@pytest.fixture(scope="module")
def sp_tokenizers(synthetic_docs):
    return {
        mt: SentencePieceTokenizer.train(synthetic_docs, 400, mt, seed=0)
        for mt in ("bpe", "unigram")
    }


def _tokenizers(sp):
    return [("byte", ByteTokenizer()), ("sp-bpe", sp["bpe"]), ("sp-unigram", sp["unigram"])]


@pytest.mark.parametrize("which", ["byte", "sp-bpe", "sp-unigram"])
def test_tokenizer_round_trip_and_byte_counts(which, sp_tokenizers):
    tok = dict(_tokenizers(sp_tokenizers))[which]
    tb = tok.token_bytes()
    assert tb.shape == (tok.vocab_size,)
    assert tb[tok.pad_id] == 0 and tb[tok.eos_id] == 0
    for text in TRICKY:
        ids = tok.encode(text)
        assert ids.dtype == np.int32
        assert np.all((ids >= 0) & (ids < tok.vocab_size))
        assert tok.pad_id not in ids.tolist() and tok.eos_id not in ids.tolist()
        assert tok.decode(ids) == text, (which, text)
        assert int(tb[ids].sum()) == len(text.encode("utf-8")), (which, text)


@pytest.mark.parametrize("which", ["byte", "sp-bpe", "sp-unigram"])
def test_tokenizer_decode_drops_specials(which, sp_tokenizers):
    tok = dict(_tokenizers(sp_tokenizers))[which]
    ids = tok.encode("abc déf").tolist()
    assert tok.decode([tok.eos_id] + ids + [tok.eos_id, tok.pad_id, tok.pad_id]) == "abc déf"


@pytest.mark.parametrize("mt", ["bpe", "unigram"])
def test_sentencepiece_literal_whitespace_symbol(mt, sp_tokenizers):
    """U+2581 (SentencePiece's own whitespace marker) can occur in real text; it must survive
    encode/decode and count as its 3 UTF-8 bytes, not as a 1-byte space."""
    tok = sp_tokenizers[mt]
    text = "a\u2581b \u2581\u2581 c"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))


def test_sentencepiece_metadata(sp_tokenizers):
    for mt, tok in sp_tokenizers.items():
        assert tok.vocab_size == 400, mt
        assert tok.pad_id == 0 and tok.eos_id == 1
        # the tokenizer actually compresses the text it was trained on
        sample = "café naïve données"
        assert len(tok.encode(sample)) < len(sample.encode("utf-8"))


def test_sentencepiece_training_is_deterministic(synthetic_docs, sp_tokenizers):
    for mt in ("bpe", "unigram"):
        again = SentencePieceTokenizer.train(synthetic_docs, 400, mt, seed=0)
        assert again._proto == sp_tokenizers[mt]._proto, mt


def test_sentencepiece_training_on_empty_text():
    with pytest.raises(JaxlmError):
        SentencePieceTokenizer.train(["", "\n\n", "   "], 300)


def test_sentencepiece_too_large_vocab_is_jaxlm_error():
    with pytest.raises(JaxlmError) as info:
        SentencePieceTokenizer.train(["tiny text only"], 100_000)
    assert "SentencePiece" in str(info.value)


@pytest.mark.parametrize("which", ["byte", "sp-bpe", "sp-unigram"])
def test_tokenizer_save_load(which, sp_tokenizers, tmp_path):
    tok = dict(_tokenizers(sp_tokenizers))[which]
    tok.save(tmp_path)
    assert (tmp_path / TOKENIZER_JSON).is_file()
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size
    if which != "byte":
        assert (tmp_path / SP_MODEL_FILE).read_bytes() == tok._proto
    for text in TRICKY:
        assert loaded.encode(text).tolist() == tok.encode(text).tolist()
        assert loaded.decode(tok.encode(text)) == text
    assert np.array_equal(loaded.token_bytes(), tok.token_bytes())


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(JaxlmError, match="tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(JaxlmError):
        SentencePieceTokenizer.load(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(JaxlmError, match="bad.model"):
        SentencePieceTokenizer.load(bad)


def test_byte_tokenizer_layout():
    tok = ByteTokenizer()
    assert tok.vocab_size == 259
    assert tok.encode("A").tolist() == [ord("A") + 3]
    assert tok.encode("é").tolist() == [0xC3 + 3, 0xA9 + 3]
    assert tok.token_bytes().sum() == 256


def test_sentencepiece_training_progress_is_plain_lines_off_a_terminal(synthetic_docs, capsys):
    """stderr is not a terminal here: progress is whole lines, no carriage returns or cursor
    codes in a log file (tqdm redraws with both)."""
    SentencePieceTokenizer.train(synthetic_docs, 300, "bpe", seed=0, show_progress=True)
    err = capsys.readouterr().err
    assert "tokenizer: training 300 bpe pieces" in err and "done in" in err
    assert "\r" not in err and "\x1b" not in err


@pytest.mark.parametrize("content", [b"", b'{"type": "by', b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_tokenizer_file_is_one_line_naming_it(tmp_path, content):
    from jaxlm.data.tokenizers import TOKENIZER_JSON, load_tokenizer
    from jaxlm.errors import JaxlmError

    (tmp_path / TOKENIZER_JSON).write_bytes(content)
    with pytest.raises(JaxlmError, match="tokenizer file") as e:
        load_tokenizer(tmp_path)
    assert str(tmp_path / TOKENIZER_JSON) in str(e.value) and "\n" not in str(e.value)
