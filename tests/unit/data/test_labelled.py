"""jaxlm.data.labelled: labelled files and tfds datasets for classification."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlm.data import labelled
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError

from helpers import keyword_rows


def test_labelled_files_and_iterator(tmp_path):
    rows = keyword_rows(50)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = ["neg", "pos"]
    (tmp_path / "d.csv").write_text("label,text\n" + "".join(
        f"{names[r['label']]},{r['text']}\n" for r in rows))
    a = labelled.load_labelled(str(tmp_path / "d.jsonl"), num_labels=2, validation_fraction=0.2)
    b = labelled.load_labelled(str(tmp_path / "d.csv"), num_labels=2, validation_fraction=0.2)
    assert len(a.train) == 40 and len(a.eval) == 10
    assert list(a.train) == list(b.train) and np.array_equal(a.train_labels, b.train_labels)
    assert b.label_names == ["neg", "pos"]
    assert all(("zebra" in t) == bool(y) for t, y in zip(a.train, a.train_labels))
    with pytest.raises(JaxlmError, match="num_labels"):
        labelled.load_labelled(str(tmp_path / "d.jsonl"), num_labels=1)
    with pytest.raises(JaxlmError, match="label_key"):
        labelled.load_labelled(str(tmp_path / "d.jsonl"), num_labels=2, label_key="y")

    tok = ByteTokenizer()
    it = labelled.train_iterator(a.train, a.train_labels, tok, seq_len=16, global_batch=4, seed=0)
    first = next(it)
    assert first["inputs"].shape == (4, 16) and first["targets"].shape == (4,)
    lens = first["valid"].sum(1)
    assert np.all(first["inputs"][np.arange(4), lens - 1] == tok.eos_id)
    state = it.get_state()
    nxt = next(it)
    it2 = labelled.train_iterator(a.train, a.train_labels, tok, seq_len=16, global_batch=4, seed=0)
    it2.set_state(state)
    again = next(it2)
    assert all(np.array_equal(nxt[k], again[k]) for k in nxt)
    ev = list(labelled.eval_batches(a.eval, a.eval_labels, tok, seq_len=16, global_batch=4))
    assert len(ev) == 3 and ev[-1]["mask"].tolist() == [True, True, False, False]


def test_tfds_labelled_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8):
        d = labelled.load_labelled("tfds:imdb_reviews", num_labels=2, eval_split="test")
    assert len(d.train) == 8 and len(d.eval) == 8
    assert all(isinstance(t, str) for t in d.train)
    assert set(d.train_labels.tolist()) <= {0, 1}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labelled_file_with_a_byte_order_mark(tmp_path, suffix):
    """A file saved as "CSV UTF-8" by Excel starts with a BOM: the first column is still `text`
    (it was reported as a missing field, '\\ufefftext'); quoted fields may hold newlines."""
    rows = keyword_rows(20)
    rows[3]["text"] = "a text over\ntwo lines, with a comma"
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        body = "text,label\r\n" + "".join(
            '"{}",{}\r\n'.format(r["text"], r["label"]) for r in rows)
    else:
        body = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(body.encode("utf-8-sig"))
    d = labelled.load_labelled(str(path), num_labels=2, validation_fraction=0.2)
    assert sorted(list(d.train) + list(d.eval)) == sorted(r["text"] for r in rows)


def test_csv_is_read_as_csv_not_lines(tmp_path):
    """Quoted fields keep their commas, newlines (CRLF too) and doubled quotes; a field longer
    than csv's 128 KiB default limit is read; JSON Lines split on \\n only (U+2028 is text)."""
    texts = ['He said "hi", then left', "line one\nline two", "crlf\r\ninside", "x" * 200_000,
             "plain"] * 2
    quoted = ['"' + t.replace('"', '""') + '"' for t in texts]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(
        f"{q},{i % 2}\n" for i, q in enumerate(quoted)), newline="")
    (tmp_path / "d.jsonl").write_text("".join(
        json.dumps({"text": t + "\u2028", "label": i % 2}, ensure_ascii=False) + "\n"
        for i, t in enumerate(texts)))
    for name, suffix in (("d.csv", ""), ("d.jsonl", "\u2028")):
        d = labelled.load_labelled(str(tmp_path / name), num_labels=2, validation_fraction=0.2)
        got = sorted(zip(list(d.train) + list(d.eval), [*d.train_labels, *d.eval_labels]))
        assert got == sorted((t + suffix, i % 2) for i, t in enumerate(texts)), name


@pytest.mark.parametrize("name, body, match", [
    ("ragged.csv", "text,label\na,0\nb,c,1\n", "ragged.csv:3: a row of 3 fields; the header has 2"),
    ("short.csv", "text,label\na,0\nb\n", "short.csv:3: a row of 1 fields"),
    ("quote.csv", 'text,label\n"a"b",0\n', "not a readable CSV file"),
    ("nul.csv", "text,label\na\x00,0\nb,1\n", "not a text file"),
    ("binary.csv", b"\x7fELF\x02\x01\x01\x00\xff\xfe", "cannot read labelled data"),
    ("nokey.csv", "body,label\na,0\n", "data.text_key='text' is not a field"),
    ("later.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', "later.jsonl:2"),
    ("list.jsonl", '{"text": "a", "label": 0}\n[1, 2]\n', "not a JSON object"),
])
def test_bad_labelled_files_are_one_line(tmp_path, name, body, match):
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(JaxlmError, match=match.replace("(", "\\(")) as e:
        labelled.load_labelled(str(path), num_labels=2)
    assert "\n" not in str(e.value)
