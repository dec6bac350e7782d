"""Corpora (stdlib, local files via the tfds builder, tfds:NAME), tokenizers and packing."""

from __future__ import annotations

import inspect
import pathlib
import time

import numpy as np
import pytest

from jaxlm.data import pipeline
from jaxlm.data.corpora import is_validation, load_corpus, stdlib_files
from jaxlm.data.local_tfds import LocalTextCorpus
from jaxlm.data.tokenizers import (
    ByteTokenizer, SentencePieceTokenizer, load_tokenizer, SP_MODEL_FILE, TOKENIZER_JSON,
)
from jaxlm.errors import JaxlmError

# ---------------------------------------------------------------------------------------------
# stdlib corpus


@pytest.fixture(scope="module")
def stdlib_pair():
    return load_corpus("stdlib", validation_fraction=0.05), load_corpus("stdlib",
                                                                         validation_fraction=0.05)


def _paths(seq) -> list[pathlib.Path]:
    return list(seq.paths)


def test_stdlib_split_is_deterministic(stdlib_pair):
    a, b = stdlib_pair
    assert _paths(a.train) == _paths(b.train)
    assert _paths(a.eval) == _paths(b.eval)
    assert a.name == b.name


def test_stdlib_split_disjoint_nonempty(stdlib_pair):
    c, _ = stdlib_pair
    train, ev = set(_paths(c.train)), set(_paths(c.eval))
    assert len(train) > 100 and len(ev) > 0
    assert not train & ev
    root, files = stdlib_files()
    assert train | ev == set(files)
    assert all(p.suffix == ".py" for p in files)
    assert not any("site-packages" in p.parts for p in files)


def test_stdlib_docs_are_text(stdlib_pair):
    c, _ = stdlib_pair
    root, _ = stdlib_files()
    first = c.train.paths[0]
    assert c.train[0] == first.read_bytes().decode("utf-8", errors="replace")
    assert isinstance(c.eval[len(c.eval) - 1], str)
    assert any("def " in c.train[i] for i in range(20))


def test_is_validation_pure_function_of_path(stdlib_pair):
    c, _ = stdlib_pair
    root, _ = stdlib_files()
    for p in _paths(c.eval):
        rel = p.relative_to(root).as_posix()
        assert is_validation(rel, 0.05)
    for p in _paths(c.train)[:200]:
        assert not is_validation(p.relative_to(root).as_posix(), 0.05)
    # Only the path string matters: no file needs to exist.
    names = [f"x/{i}.py" for i in range(200)]
    assert 20 < sum(is_validation(n, 0.3) for n in names) < 100
    # monotone in the fraction, and the extremes behave
    assert all(is_validation(n, 1.0) for n in names)
    assert not any(is_validation(n, 0.0) for n in names)
    assert all(is_validation(n, 0.5) for n in names if is_validation(n, 0.2))


def test_is_validation_same_in_another_process():
    """The split must not depend on the process (e.g. Python's salted str hash)."""
    import os
    import subprocess
    import sys

    names = [f"pkg/mod_{i}.py" for i in range(300)]
    here = "".join("1" if is_validation(n, 0.3) else "0" for n in names)
    code = ("import sys; from jaxlm.data.corpora import is_validation; "
            "print(''.join('1' if is_validation(f'pkg/mod_{i}.py', 0.3) else '0' "
            "for i in range(300)))")
    env = dict(os.environ, PYTHONHASHSEED="12345", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == here


def test_stdlib_eval_fraction_roughly_matches(stdlib_pair):
    c, _ = stdlib_pair
    frac = len(c.eval) / (len(c.eval) + len(c.train))
    assert 0.02 < frac < 0.10, frac
    c30 = load_corpus("stdlib", validation_fraction=0.3)
    frac30 = len(c30.eval) / (len(c30.eval) + len(c30.train))
    assert 0.24 < frac30 < 0.36, frac30


# ---------------------------------------------------------------------------------------------
# local corpora through the tfds ArrayRecord builder

DOCS = {
    "a.txt": "first document\nwith two lines\n",
    "b.txt": "café naïve — 日本語テキスト 🎉🚀\n\ttabbed   spaced\n",
    "c.md": "# heading\n\nplain ascii\n",
    "sub/d.txt": "nested file in a subdirectory ✓\n",
    "sub/e.txt": "ünïcödé in a second nested file\r\nwindows line\r\n",
    "f.txt": "x" * 1000 + "\n",
}


def _write_docs(root: pathlib.Path, docs=DOCS) -> pathlib.Path:
    for rel, text in docs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode("utf-8"))
    return root


def _all(c) -> list[str]:
    return [c.train[i] for i in range(len(c.train))] + [c.eval[i] for i in range(len(c.eval))]


def test_local_directory_round_trip(tmp_path):
    root = _write_docs(tmp_path / "texts")
    (root / ".hidden").write_text("should be skipped")
    c = load_corpus(str(root), validation_fraction=0.3, cache_dir=str(tmp_path / "cache"))
    assert len(c.train) >= 1 and len(c.eval) >= 1
    assert len(c.train) + len(c.eval) == len(DOCS)
    docs = _all(c)
    assert all(isinstance(d, str) for d in docs)
    assert sorted(docs) == sorted(DOCS.values())  # exact, non-ASCII and \r\n included
    assert "should be skipped" not in docs


def test_local_directory_split_follows_path_hash(tmp_path):
    root = _write_docs(tmp_path / "texts")
    c = load_corpus(str(root), validation_fraction=0.5, cache_dir=str(tmp_path / "cache"))
    expected_eval = sorted(text for rel, text in DOCS.items() if is_validation(rel, 0.5))
    assert expected_eval, "the fixture should put some file in eval at fraction 0.5"
    assert sorted(c.eval[i] for i in range(len(c.eval))) == expected_eval


def test_local_single_file(tmp_path):
    lines = [f"line {i}: ünïcödé ✓\n" for i in range(20)]
    p = tmp_path / "one.txt"
    p.write_text("".join(lines), encoding="utf-8")
    c = load_corpus(str(p), validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    assert len(c.train) == 1 and len(c.eval) == 1
    train, ev = c.train[0], c.eval[0]
    assert train + ev == "".join(lines)  # nothing lost, nothing duplicated
    assert ev == "".join(lines[15:])  # the last quarter of the lines
    assert train.splitlines()[-1] == "line 14: ünïcödé ✓"


def test_local_single_line_file_has_eval_text(tmp_path):
    """A single file with one (long) line: the held-out part must still be text, or loading
    must fail clearly; an empty eval document makes the run report eval_loss 0, perplexity 1."""
    p = tmp_path / "oneline.txt"
    p.write_text("a single long line without any newline " * 50, encoding="utf-8")
    try:
        c = load_corpus(str(p), validation_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    except JaxlmError as e:
        assert str(p) in str(e)
        return
    eval_text = "".join(c.eval[i] for i in range(len(c.eval)))
    assert eval_text.strip(), "the eval split of a one-line file is empty"
    assert c.train[0] + eval_text == p.read_text()


def test_local_glob(tmp_path):
    root = _write_docs(tmp_path / "texts")
    c = load_corpus(str(root / "**" / "*.txt"), validation_fraction=0.3,
                    cache_dir=str(tmp_path / "cache"))
    want = sorted(t for rel, t in DOCS.items() if rel.endswith(".txt"))
    assert sorted(_all(c)) == want
    assert DOCS["c.md"] not in _all(c)


def test_local_undecodable_bytes_become_replacement_char(tmp_path):
    root = tmp_path / "texts"
    root.mkdir()
    (root / "good.txt").write_text("good text\n")
    (root / "bad.txt").write_bytes(b"before \xff\xfe after\n")
    c = load_corpus(str(root), validation_fraction=0.3, cache_dir=str(tmp_path / "cache"))
    docs = _all(c)
    bad = [d for d in docs if d.startswith("before")]
    assert bad == ["before \ufffd\ufffd after\n"]
    assert "good text\n" in docs


def test_local_missing_path(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(missing), cache_dir=str(tmp_path / "cache"))
    assert str(missing) in str(info.value)
    assert "data.corpus" in str(info.value)


def test_local_glob_without_matches(tmp_path):
    spec = str(tmp_path / "nothing" / "*.txt")
    with pytest.raises(JaxlmError) as info:
        load_corpus(spec, cache_dir=str(tmp_path / "cache"))
    assert spec in str(info.value)


def test_local_empty_files(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "a.txt").write_bytes(b"")
    (root / "b.txt").write_bytes(b"")
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(root), cache_dir=str(tmp_path / "cache"))
    assert str(root) in str(info.value)


def test_local_empty_single_file(tmp_path):
    single = tmp_path / "empty.txt"
    single.write_bytes(b"")
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(single), cache_dir=str(tmp_path / "cache"))
    assert str(single) in str(info.value)


def test_local_empty_directory(tmp_path):
    root = tmp_path / "nothing_here"
    root.mkdir()
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(root), cache_dir=str(tmp_path / "cache"))
    assert str(root) in str(info.value)


def _prepared_dirs(cache: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p.parent for p in cache.rglob("dataset_info.json"))


def test_local_prepare_is_cached(tmp_path, monkeypatch):
    root = _write_docs(tmp_path / "texts")
    cache = tmp_path / "cache"
    calls = []
    original = LocalTextCorpus.download_and_prepare

    def counting(self, *a, **k):
        calls.append(self.data_dir)
        return original(self, *a, **k)

    monkeypatch.setattr(LocalTextCorpus, "download_and_prepare", counting)
    first = load_corpus(str(root), validation_fraction=0.3, cache_dir=str(cache))
    assert len(calls) == 1
    (prepared,) = _prepared_dirs(cache)
    stamp = {p: p.stat().st_mtime_ns for p in prepared.iterdir()}
    time.sleep(0.01)

    second = load_corpus(str(root), validation_fraction=0.3, cache_dir=str(cache))
    assert len(calls) == 1, "the second load must reuse the prepared ArrayRecord files"
    assert _prepared_dirs(cache) == [prepared]
    assert {p: p.stat().st_mtime_ns for p in prepared.iterdir()} == stamp
    assert _all(first) == _all(second)


def test_local_cache_invalidated_when_a_file_changes(tmp_path):
    root = _write_docs(tmp_path / "texts")
    cache = tmp_path / "cache"
    load_corpus(str(root), validation_fraction=0.3, cache_dir=str(cache))
    (root / "a.txt").write_text("edited content, a different size\n")
    c = load_corpus(str(root), validation_fraction=0.3, cache_dir=str(cache))
    docs = _all(c)
    assert "edited content, a different size\n" in docs
    assert DOCS["a.txt"] not in docs
    assert len(_prepared_dirs(cache)) == 2


# ---------------------------------------------------------------------------------------------
# tfds:NAME, offline with tfds's mock data (only here: the mock intercepts every builder)


def test_tfds_corpus_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        c = load_corpus("tfds:tiny_shakespeare", eval_split="test")
        assert c.name == "tfds:tiny_shakespeare"
        assert len(c.train) == 6
        assert all(isinstance(c.train[i], str) for i in range(6))
        assert len(c.eval) == 6 and isinstance(c.eval[0], str)
        assert any(len(c.train[i]) > 0 for i in range(6))


def test_tfds_wrong_text_key():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(JaxlmError) as info:
            load_corpus("tfds:tiny_shakespeare", eval_split="test", text_key="content")
    assert "data.text_key" in str(info.value)
    assert "content" in str(info.value)


def test_tfds_unknown_dataset():
    with pytest.raises(JaxlmError) as info:
        load_corpus("tfds:no_such_dataset_jaxlm_test")
    assert "no_such_dataset_jaxlm_test" in str(info.value)


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


# ---------------------------------------------------------------------------------------------
# packing

PACK_DOCS = ["hello world", "ab", "é日本🎉 xyz", "the quick brown fox jumps over the lazy dog " * 3,
             "z", "", "last document\n"]


def _stream(docs, tok) -> list[int]:
    out = []
    for d in docs:
        out += tok.encode(d).tolist() + [tok.eos_id]
    return out


def _rows(batches) -> list[np.ndarray]:
    """Each row back as its seq_len + 1 packed tokens (inputs + the last target)."""
    rows = []
    for b in batches:
        for i in range(b["inputs"].shape[0]):
            rows.append(np.concatenate([b["inputs"][i], b["targets"][i, -1:]]))
    return rows


@pytest.mark.parametrize("seq_len, batch", [(8, 3), (5, 2), (16, 4)])
def test_eval_batches_pack_exactly(seq_len, batch):
    tok = ByteTokenizer()
    batches = list(pipeline.eval_batches(PACK_DOCS, tok, seq_len=seq_len, global_batch=batch))
    assert batches
    stream = _stream(PACK_DOCS, tok)
    for b in batches:
        assert set(b) == {"inputs", "targets", "mask"}
        assert b["inputs"].shape == b["targets"].shape == b["mask"].shape == (batch, seq_len)
        assert b["inputs"].dtype == np.int32 and b["targets"].dtype == np.int32
        assert b["mask"].dtype == np.bool_
        # within a row, targets are the inputs shifted by one
        assert np.array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
    rows = _rows(batches)
    masks = [m for b in batches for m in b["mask"]]
    # the packed tokens, padding removed, are exactly the documents joined by EOS
    packed = []
    for row, mask in zip(rows, masks):
        # a row's first token is input-only: it is real whenever the row holds any target
        keep = np.concatenate([[mask.any()], mask])
        packed += row[keep].tolist()
        # mask is False exactly on padding (pad id 0 never occurs in byte-tokenized text)
        assert np.array_equal(mask, row[1:] != tok.pad_id)
        # padding only at the end of a row
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
    assert packed == stream
    # all rows but the padded tail are full; the number of batches is the minimum needed
    n_rows = -(-len(stream) // (seq_len + 1))
    assert len(batches) == -(-n_rows // batch)
    # the last batch is padded to full size with fully masked rows
    assert sum(int(m.any()) for m in masks) == n_rows
    short = -n_rows % batch
    last = batches[-1]["mask"]
    assert not last[batch - short:].any() and last[: batch - short].any(axis=1).all()
    assert not batches[-1]["inputs"][batch - short:].any()  # padded with pad id 0


def test_eval_batches_padding_cases_are_covered():
    # guards the parametrization above: it must include a partial last row and padded rows
    n = len(_stream(PACK_DOCS, ByteTokenizer()))
    cases = [(8, 3), (5, 2), (16, 4)]
    assert any(-(-n // (s + 1)) % b for s, b in cases)
    assert all(n % (s + 1) for s, b in cases)


def test_eval_batches_max_batches_and_repeatable():
    tok = ByteTokenizer()
    docs = ["some words here " * 10] * 5
    all_b = list(pipeline.eval_batches(docs, tok, seq_len=8, global_batch=2))
    two = list(pipeline.eval_batches(docs, tok, seq_len=8, global_batch=2, max_batches=2))
    assert len(all_b) > 2 and len(two) == 2
    for a, b in zip(all_b, two):
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_empty_splits_are_errors():
    tok = ByteTokenizer()
    with pytest.raises(JaxlmError):
        list(pipeline.eval_batches([], tok, seq_len=8, global_batch=2))
    with pytest.raises(JaxlmError):
        pipeline.train_iterator([], tok, seq_len=8, global_batch=2, seed=0)


_TRAIN_PARAMS = inspect.signature(pipeline.train_iterator).parameters


def _train_it(docs, tok, **kw):
    """train_iterator with a small row-shuffle window where the pipeline has one (speed: the
    default window reads ~1000 rows before the first batch)."""
    if "shuffle_window" in _TRAIN_PARAMS:
        kw.setdefault("shuffle_window", 16)
    return pipeline.train_iterator(docs, tok, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x) and len(a) == len(b)


TRAIN_DOCS = [f"document number {i}: " + "abcdefghij"[i % 10] * (5 + 3 * i) for i in range(12)]


def test_train_iterator_shapes_and_endless():
    tok = ByteTokenizer()
    total = len(_stream(TRAIN_DOCS, tok))
    seq_len, batch = 8, 4
    n = 3 * total // (batch * seq_len) + 5  # more batches than three passes over the data
    # the pipeline's defaults (row-shuffle window included)
    batches = _take(pipeline.train_iterator(TRAIN_DOCS, tok, seq_len=seq_len, global_batch=batch,
                                            seed=0), n)
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape == b["mask"].shape == (batch, seq_len)
        assert b["inputs"].dtype == np.int32 and b["mask"].dtype == np.bool_
        assert np.array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
        assert b["mask"].all()  # an endless stream has no padding
    # every document shows up
    seen = set(np.concatenate([b["inputs"].ravel() for b in batches]).tolist())
    assert set(_stream(TRAIN_DOCS, tok)) <= seen


def test_train_iterator_seeded():
    tok = ByteTokenizer()
    kw = dict(seq_len=8, global_batch=4)
    a = _take(_train_it(TRAIN_DOCS, tok, seed=1, **kw), 12)
    b = _take(_train_it(TRAIN_DOCS, tok, seed=1, **kw), 12)
    c = _take(_train_it(TRAIN_DOCS, tok, seed=2, **kw), 12)
    same_seed, other_seed = _same(a, b), _same(a, c)
    assert same_seed, "the same seed must give the same batches"
    assert not other_seed, "a different seed must give a different order"


def test_train_iterator_local_rows_partition_the_global_batch():
    """Each process keeps its rows of the same global batches: together they are the batch."""
    tok = ByteTokenizer()
    kw = dict(seq_len=8, global_batch=4, seed=0)
    full = _take(_train_it(TRAIN_DOCS, tok, **kw), 10)
    halves = [_take(_train_it(TRAIN_DOCS, tok, local_rows=slice(2 * p, 2 * p + 2), **kw), 10)
              for p in range(2)]
    for i, whole in enumerate(full):
        for k in whole:
            assert halves[0][i][k].shape == (2, 8)
            assert np.array_equal(np.concatenate([halves[0][i][k], halves[1][i][k]]), whole[k])


def test_eval_batches_local_rows():
    tok = ByteTokenizer()
    kw = dict(seq_len=8, global_batch=4)
    full = list(pipeline.eval_batches(TRAIN_DOCS, tok, **kw))
    parts = [list(pipeline.eval_batches(TRAIN_DOCS, tok, local_rows=slice(p, p + 1), **kw))
             for p in range(4)]
    assert all(len(part) == len(full) for part in parts)  # every process agrees on the count
    for i, whole in enumerate(full):
        assert np.array_equal(np.concatenate([part[i]["inputs"] for part in parts]),
                              whole["inputs"])


def _state_after(n, **kw):
    it = _train_it(TRAIN_DOCS, ByteTokenizer(), **kw)
    _take(it, n)
    return it, it.get_state()


RESTORE_KW = dict(seq_len=8, global_batch=4, seed=3)


def test_train_iterator_state_restore():
    tok = ByteTokenizer()
    it, state = _state_after(7, **RESTORE_KW)
    expected = _take(it, 10)
    fresh = _train_it(TRAIN_DOCS, tok, **RESTORE_KW)
    fresh.set_state(state)
    same = _same(_take(fresh, 10), expected)
    assert same, "the restored iterator yields different batches"
    # a fresh iterator without the state yields something else
    differs = not _same(_take(_train_it(TRAIN_DOCS, tok, **RESTORE_KW), 10), expected)
    assert differs


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_train_iterator_state_survives_json(n):
    """Checkpoints hold the iterator state as JSON (tuples become lists, which grain 0.2.18
    misreads); after `grain_state_from_json` it restores the same batches as the state itself."""
    import json

    from jaxlm.checkpoint import grain_state_from_json

    it, state = _state_after(n, **RESTORE_KW)
    expected = _take(it, 10)
    again = _train_it(TRAIN_DOCS, ByteTokenizer(), **RESTORE_KW)
    again.set_state(grain_state_from_json(json.loads(json.dumps(state))))
    same = _same(_take(again, 10), expected)
    assert same, "the restored iterator yields different batches"


def test_checkpointer_restores_data_iterator(tmp_path):
    """The real resume path: jaxlm's Checkpointer saves the train state and the iterator, and
    restoring both continues with exactly the batches an uninterrupted run would see."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxlm.checkpoint import Checkpointer

    tok = ByteTokenizer()
    # the pipeline's defaults, as the training loop uses them
    it = pipeline.train_iterator(TRAIN_DOCS, tok, **RESTORE_KW)
    _take(it, 5)
    state = {"w": jnp.arange(6, dtype=jnp.float32), "step": jnp.int32(5)}
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    ckpt.save(5, state, it)
    ckpt.wait()
    expected = _take(it, 10)
    ckpt.close()

    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    assert ckpt.latest_step() == 5
    fresh = pipeline.train_iterator(TRAIN_DOCS, tok, **RESTORE_KW)
    abstract = jax.eval_shape(lambda: state)
    sh = NamedSharding(jax.make_mesh((1,), ("x",)), PartitionSpec())
    restored = ckpt.restore(5, abstract, jax.tree.map(lambda _: sh, abstract), fresh)
    ckpt.close()
    assert np.array_equal(np.asarray(restored["w"]), np.arange(6, dtype=np.float32))
    assert int(restored["step"]) == 5
    same = _same(_take(fresh, 10), expected)
    assert same, "the restored iterator yields different batches"
