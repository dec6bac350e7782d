"""Labelled text for sequence classification (`model.objective=classify`): (text, label) rows.

Sources (`data.corpus`):
- a local `.csv` (with a header) or `.jsonl` file: its `data.text_key` and `data.label_key`
  columns; `data.validation_fraction` of the rows (a seeded draw) are the validation split;
- a directory holding `<data.train_split>.{csv,jsonl}` and `<data.eval_split>.{csv,jsonl}`;
- `tfds:NAME` (e.g. `tfds:imdb_reviews`, `tfds:glue/sst2` with `data.text_key=sentence`): the
  splits `data.train_split` / `data.eval_split` through tfds's data source;
- `hf:PATH` (or a `.parquet` / `.arrow` path, a `save_to_disk` folder): a Hugging Face dataset
  from local files (jaxlm/data/hf_datasets.py); a ClassLabel column's names are the label names.
Labels are integers in [0, model.num_labels), or strings, numbered in sorted order.

Each row is `encode(text)` cut to seq_len - 1 tokens plus EOS, right-padded with pad to seq_len:
a batch holds inputs (b, t) int32, valid (b, t) bool, targets (b,) int32 labels and mask (b,)
bool. The train iterator is a grain `DatasetIterator` (checkpointable, like the LM one).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import pathlib
from typing import Any, Iterator, Optional, Sequence

import grain
import numpy as np

from jaxlm.data.tokenizers import Tokenizer
from jaxlm.errors import JaxlmError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class LabelledData:
    name: str
    train: Sequence[str]  # texts (also what a SentencePiece tokenizer trains on)
    train_labels: np.ndarray  # int32
    eval: Sequence[str]
    eval_labels: np.ndarray
    label_names: list[str]  # label i's name (its original value)


def _read_rows(path: pathlib.Path, text_key: str, label_key: str) -> tuple[list[str], list[Any]]:
    try:  # utf-8-sig: files saved by Excel or Notepad may start with a byte-order mark; bytes,
        # not read_text: its newline translation would turn a quoted \r\n into \n
        raw = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise JaxlmError(f"cannot read labelled data {path}: {e}") from None
    if "\x00" in raw:  # valid UTF-8 but binary (the csv module accepts NUL since 3.11)
        raise JaxlmError(f"labelled data {path} is not a text file (it holds NUL bytes)")
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(raw, path, (text_key, label_key))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl_rows(raw, path, (text_key, label_key))
    else:
        raise JaxlmError(f"labelled data {path} must be a .csv or .jsonl file")
    if not rows:
        raise JaxlmError(f"labelled data {path} holds no rows")
    return [str(r[text_key]) for r in rows], [r[label_key] for r in rows]


def _missing_key(keys: Sequence[str], fields: Sequence[str], where: str) -> None:
    for key, what in zip(keys, ("text_key", "label_key")):
        if key not in fields:
            raise JaxlmError(f"data.{what}='{key}' is not a field of {where} "
                             f"(fields: {list(fields)})")


@contextlib.contextmanager
def _no_field_limit() -> Iterator[None]:
    """csv's 128 KiB per-field limit (process-wide) lifted while reading: reviews can be long."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_rows(raw: str, path: pathlib.Path, keys: Sequence[str]) -> list[dict]:
    """RFC 4180 through the csv module: quoted fields may hold commas, newlines and doubled
    quotes; a header row names the fields; a row with more or fewer fields is an error."""
    # not lines: quoted newlines survive; strict: a stray quote is an error, not a merged field
    reader = csv.reader(io.StringIO(raw, newline=""), strict=True)
    rows: list[dict] = []
    try:
        with _no_field_limit():
            header = next(reader, None)
            if header is None:
                return rows
            _missing_key(keys, header, str(path))
            for fields in reader:
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    raise JaxlmError(f"{path}:{reader.line_num}: a row of {len(fields)} fields; "
                                     f"the header has {len(header)} (quote fields that hold "
                                     "commas)")
                rows.append(dict(zip(header, fields)))
    except csv.Error as e:
        raise JaxlmError(f"labelled data {path} is not a readable CSV file (line "
                         f"{reader.line_num}: {e})") from None
    return rows


def _jsonl_rows(raw: str, path: pathlib.Path, keys: Sequence[str]) -> list[dict]:
    rows = []  # split on \n only: a JSON string may hold U+2028, which splitlines() splits at
    for n, line in enumerate(raw.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise JaxlmError(f"{path}:{n} is not a JSON object: {e.msg}") from None
        if not isinstance(row, dict):
            raise JaxlmError(f"{path}:{n} is not a JSON object (a {type(row).__name__})")
        _missing_key(keys, list(row), f"{path}:{n}")
        rows.append(row)
    return rows


def _find(directory: pathlib.Path, split: str) -> pathlib.Path:
    for ext in (".jsonl", ".csv", ".json"):
        if (directory / f"{split}{ext}").is_file():
            return directory / f"{split}{ext}"
    raise JaxlmError(f"labelled data directory {directory} has no {split}.jsonl or {split}.csv")


def _tfds_rows(name: str, text_key: str, label_key: str, train_split: str, eval_split: str,
               data_dir: Optional[str], download: bool):
    from jaxlm.data.corpora import tfds_corpus

    corpus = tfds_corpus(name, text_key=text_key, train_split=train_split,
                         eval_split=eval_split, data_dir=data_dir, download=download)
    out = []
    for view in (corpus.train, corpus.eval):
        first = view.source[0] if len(view.source) else {}
        if label_key not in first:
            raise JaxlmError(f"data.label_key='{label_key}' is not a feature of tfds:{name} "
                             f"(features: {list(first)})")
        texts = [view[i] for i in range(len(view))]
        labels = [view.source[i][label_key] for i in range(len(view))]
        out.append((texts, labels))
    return out


def _number_labels(train: list[Any], ev: list[Any], num_labels: int, source: str):
    def as_int(v: Any) -> Optional[int]:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v.strip())
        return None

    ints = [as_int(v) for v in train + ev]
    if all(i is not None for i in ints):
        names = [str(i) for i in range(num_labels)]
        numbered = np.asarray(ints, np.int32)
    else:
        names = sorted({str(v) for v in train + ev})
        index = {n: i for i, n in enumerate(names)}
        numbered = np.asarray([index[str(v)] for v in train + ev], np.int32)
    bad = numbered[(numbered < 0) | (numbered >= num_labels)]
    if bad.size or len(names) > num_labels:
        raise JaxlmError(f"{source} has labels outside [0, model.num_labels={num_labels}) "
                         f"({len(set(names)) if bad.size == 0 else int(bad[0])}): "
                         f"set model.num_labels")
    return numbered[:len(train)], numbered[len(train):], names


def load_labelled(
    spec: str, *, num_labels: int, text_key: str = "text", label_key: str = "label",
    train_split: str = "train", eval_split: str = "validation", validation_fraction: float = 0.1,
    seed: int = 0, tfds_data_dir: Optional[str] = None, tfds_download: bool = False,
    cache_dir: Optional[str] = None,
) -> LabelledData:
    """The labelled data set named by `data.corpus` (see the module docstring)."""
    from jaxlm.data import hf_datasets

    class_names = None
    if hf_datasets.is_hf_spec(spec):
        (tr, tr_l), (ev, ev_l), class_names = hf_datasets.hf_labelled(
            spec, text_key=text_key, label_key=label_key, train_split=train_split,
            eval_split=eval_split, validation_fraction=validation_fraction, seed=seed,
            cache_dir=cache_dir)
    elif spec.startswith("tfds:"):
        (tr, tr_l), (ev, ev_l) = _tfds_rows(spec[5:], text_key, label_key, train_split,
                                            eval_split, tfds_data_dir, tfds_download)
    else:
        path = pathlib.Path(spec).expanduser()
        if path.is_dir():
            tr, tr_l = _read_rows(_find(path, train_split), text_key, label_key)
            ev, ev_l = _read_rows(_find(path, eval_split), text_key, label_key)
        elif path.is_file():
            texts, labels = _read_rows(path, text_key, label_key)
            order = np.random.default_rng(seed).permutation(len(texts))
            n_eval = min(max(1, int(round(len(texts) * validation_fraction))), len(texts) - 1)
            if n_eval < 1:
                raise JaxlmError(f"labelled data {path} needs at least two rows")
            ev_i, tr_i = sorted(order[:n_eval]), sorted(order[n_eval:])
            tr, tr_l = [texts[i] for i in tr_i], [labels[i] for i in tr_i]
            ev, ev_l = [texts[i] for i in ev_i], [labels[i] for i in ev_i]
        else:
            raise JaxlmError(f"data.corpus={spec}: no such file or directory (classification "
                             "reads a .csv/.jsonl file, a directory of them, or tfds:NAME)")
    if not tr or not ev:
        raise JaxlmError(f"data.corpus={spec}: the {'train' if not tr else 'eval'} split is empty")
    tr_n, ev_n, names = _number_labels(list(tr_l), list(ev_l), num_labels, f"data.corpus={spec}")
    if class_names and len(class_names) <= num_labels:
        names = list(class_names) + names[len(class_names):]
    return LabelledData(spec, tr, tr_n, ev, ev_n, names)


def encode_row(text: str, tokenizer: Tokenizer, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (seq_len,) int32 right-padded with pad, valid (seq_len,) bool)."""
    ids = np.asarray(tokenizer.encode(text), np.int32)[: seq_len - 1]
    ids = np.concatenate([ids, np.asarray([tokenizer.eos_id], np.int32)])
    tokens = np.full(seq_len, tokenizer.pad_id, np.int32)
    tokens[: len(ids)] = ids
    return tokens, np.arange(seq_len) < len(ids)


def _rows(texts: Sequence[str], labels: np.ndarray, tokenizer: Tokenizer, seq_len: int):
    def row(i: int) -> dict:
        tokens, valid = encode_row(texts[int(i)], tokenizer, seq_len)
        return {"inputs": tokens, "valid": valid, "targets": np.int32(labels[int(i)]),
                "mask": np.bool_(True)}

    return grain.MapDataset.range(len(texts)), row


def _select(batch: Batch, rows: Optional[slice]) -> Batch:
    return batch if rows is None else {k: v[rows] for k, v in batch.items()}


def train_iterator(
    texts: Sequence[str], labels: np.ndarray, tokenizer: Tokenizer, *, seq_len: int,
    global_batch: int, seed: int, local_rows: Optional[slice] = None,
) -> grain.DatasetIterator:
    """Endless, reshuffled each epoch, checkpointable: Batch of this process's `local_rows`."""
    if len(texts) == 0:
        raise JaxlmError("the training split has no rows")
    index, row = _rows(texts, labels, tokenizer, seq_len)
    ds = index.shuffle(seed=seed).repeat(None).map(row)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=64))
    it_ds = it_ds.batch(global_batch, drop_remainder=True)
    return iter(it_ds.map(lambda b: _select(b, local_rows)))


def eval_batches(
    texts: Sequence[str], labels: np.ndarray, tokenizer: Tokenizer, *, seq_len: int,
    global_batch: int, max_batches: int = 0, local_rows: Optional[slice] = None,
) -> Iterator[Batch]:
    """The eval split once, in order; the last batch is filled with masked rows."""
    index, row = _rows(texts, labels, tokenizer, seq_len)
    n = len(texts)
    for b, start in enumerate(range(0, n, global_batch)):
        if max_batches and b >= max_batches:
            return
        rows = [row(i) for i in range(start, min(start + global_batch, n))]
        batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        short = global_batch - len(rows)
        if short:
            batch = {k: np.concatenate([v, np.zeros((short,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
            batch["valid"][-short:, 0] = True  # padding rows: one attended token, no NaNs
        yield _select(batch, local_rows)
