"""jaxlm.data.local_tfds: local files and directories as corpora through the tfds ArrayRecord
builder (split, encodings, empty and missing input, the prepared cache)."""

from __future__ import annotations

import pathlib
import time

import pytest

from jaxlm.data.corpora import is_validation, load_corpus
from jaxlm.data.local_tfds import LocalTextCorpus
from jaxlm.errors import JaxlmError


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
    # a Sequence: iterates (to the end, not into the data source's ValueError), negative indices
    assert list(c.train) + list(c.eval) == docs
    assert c.train[-1] == c.train[len(c.train) - 1]


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
# JSON Lines: one document per record, its data.text_key field


def _jsonl(path: pathlib.Path, records: list) -> pathlib.Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def test_local_jsonl_records_are_documents(tmp_path):
    """A .jsonl corpus was trained on as raw JSON text ('{"text": ...}'): its documents are the
    records' text fields (data.text_key), other files stay one document each."""
    root = tmp_path / "mixed"
    _jsonl(root / "a.jsonl", [{"text": f"record {i} ünï", "body": f"body {i}", "id": i}
                              for i in range(5)])
    _jsonl(root / "sub" / "b.jsonl", [{"text": "b one", "body": "b body"}])
    (root / "c.txt").write_text("plain text file\n")
    cache = str(tmp_path / "cache")
    c = load_corpus(str(root), validation_fraction=0.3, cache_dir=cache)
    want = [f"record {i} ünï" for i in range(5)] + ["b one", "plain text file\n"]
    assert sorted(_all(c)) == sorted(want)
    assert not any("{" in d for d in _all(c))
    # another field is another corpus (its own prepared cache), and the glob reads the same
    other = load_corpus(str(root / "**" / "*.jsonl"), validation_fraction=0.3, cache_dir=cache,
                        text_key="body")
    assert sorted(_all(other)) == sorted([f"body {i}" for i in range(5)] + ["b body"])


def test_local_single_jsonl_holds_out_its_last_records(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl(path, [{"text": f"doc {i}"} for i in range(20)])
                     .read_bytes() + b"\n   \n")  # a BOM and blank lines are fine
    c = load_corpus(str(path), validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    assert [c.train[i] for i in range(len(c.train))] == [f"doc {i}" for i in range(15)]
    assert [c.eval[i] for i in range(len(c.eval))] == [f"doc {i}" for i in range(15, 20)]


@pytest.mark.parametrize("bad_line, words", [
    ('{"text": "unterminated\n', ["is not a JSON object"]),
    ('{"content": "no text field"}\n', ["no field 'text'", "data.text_key", "content"]),
    ('{"text": 42}\n', ["non-string field 'text'"]),
    ('["a", "list"]\n', ["no field 'text'"]),
], ids=["invalid_json", "missing_field", "not_a_string", "not_an_object"])
def test_local_jsonl_bad_line_names_file_and_line(tmp_path, bad_line, words):
    path = _jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"text": "also fine"}])
    path.write_text(path.read_text() + "\n" + bad_line)
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(path), cache_dir=str(tmp_path / "cache"))
    msg = str(info.value)
    assert f"{path}:4" in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_local_jsonl_with_one_record(tmp_path):
    path = _jsonl(tmp_path / "one.jsonl", [{"text": "only one"}])
    with pytest.raises(JaxlmError) as info:
        load_corpus(str(path), cache_dir=str(tmp_path / "cache"))
    assert str(path) in str(info.value) and "at least two" in str(info.value)
