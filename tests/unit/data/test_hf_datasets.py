"""jaxlm.data.hf_datasets: Hugging Face `datasets` from local parquet / arrow / json files and
save_to_disk folders, for LM corpora and classification, with the network switched off."""

from __future__ import annotations

import socket

import datasets
import pytest

from jaxlm.config import DataConfig
from jaxlm.data import labelled
from jaxlm.data.corpora import load_corpus
from jaxlm.data.source import load_run_data
from jaxlm.errors import JaxlmError

TEXTS = [f"document {i}: {'zebra' if i % 3 == 0 else 'horse'}, \"quoted\"\nsecond line"
         for i in range(20)]
LABELS = [int(i % 3 == 0) for i in range(20)]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One tiny labelled data set as parquet, json lines, an arrow file and save_to_disk
    folders (a DatasetDict with train/validation, and a single Dataset)."""
    root = tmp_path_factory.mktemp("hf")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg"])})
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS}, features=features)
    ds.to_parquet(str(root / "d.parquet"))
    ds.to_json(str(root / "d.jsonl"))
    datasets.DatasetDict({"train": ds.select(range(16)), "validation": ds.select(range(16, 20))}
                         ).save_to_disk(str(root / "dict"))
    ds.save_to_disk(str(root / "single"))
    (root / "split").mkdir()  # a folder of split-named files: load_dataset(folder)
    ds.select(range(16)).to_parquet(str(root / "split" / "train.parquet"))
    ds.select(range(16, 20)).to_parquet(str(root / "split" / "validation.parquet"))
    arrow = next((root / "single").glob("*.arrow"))
    (root / "d.arrow").write_bytes(arrow.read_bytes())
    (root / "garbage.parquet").write_bytes(b"PAR1 not really" * 10)
    return root


@pytest.mark.parametrize("spec", ["d.parquet", "hf:d.parquet", "hf:d.jsonl", "d.arrow",
                                  "single", "hf:dict", "hf:split"])
def test_lm_corpus(files, tmp_path, no_network, spec):
    path = f"hf:{files / spec[3:]}" if spec.startswith("hf:") else str(files / spec)
    c = load_corpus(path, validation_fraction=0.2, cache_dir=str(tmp_path))
    assert list(c.train) + list(c.eval) == TEXTS  # the dict's own validation split is the last 4
    assert len(c.eval) == 4


def test_classification_with_class_names_and_seeded_split(files, tmp_path, no_network):
    d = labelled.load_labelled(f"hf:{files / 'dict'}", num_labels=2)
    assert list(d.eval) == TEXTS[16:] and d.eval_labels.tolist() == LABELS[16:]
    assert d.label_names == ["pos", "neg"]  # the ClassLabel's, not sorted strings
    p = labelled.load_labelled(str(files / "d.parquet"), num_labels=2, validation_fraction=0.25,
                               seed=3, cache_dir=str(tmp_path))
    rows = sorted(zip([*p.train, *p.eval], [*p.train_labels, *p.eval_labels]))
    assert len(p.eval) == 5 and rows == sorted(zip(TEXTS, LABELS))
    again = labelled.load_labelled(str(files / "d.parquet"), num_labels=2,
                                   validation_fraction=0.25, seed=3, cache_dir=str(tmp_path))
    assert list(again.eval) == list(p.eval)
    cache = tmp_path / "run_cache"
    run = load_run_data(DataConfig(corpus=f"hf:{files / 'd.jsonl'}", cache_dir=str(cache)),
                        "classify", 2)
    assert len(run.rows.train) + len(run.rows.eval) == 20
    assert list((cache / "hf").iterdir())  # converted under data.cache_dir, not ~/.cache


@pytest.mark.parametrize("spec, kw, match", [
    ("hf:imdb", {}, "no such local file or folder; .*save_to_disk"),
    ("hf:stanfordnlp/imdb", {}, "nothing is downloaded"),
    ("hf:dict", {"text_key": "body"}, "data.text_key='body' is not a column"),
    ("hf:dict", {"text_key": "label"}, "data.text_key='label' .* is not a text column"),
    ("hf:dict", {"train_split": "training"}, "data.train_split='training' is not a split"),
    ("garbage.parquet", {}, "cannot read it as a Hugging Face dataset"),
])
def test_errors_are_one_line(files, tmp_path, no_network, spec, kw, match):
    if not spec.startswith("hf:") or spec == "hf:dict":
        spec = f"hf:{files / spec[3:]}" if spec.startswith("hf:") else str(files / spec)
    with pytest.raises(JaxlmError, match=match) as e:
        load_corpus(spec, cache_dir=str(tmp_path), **kw)
    assert "\n" not in str(e.value)
