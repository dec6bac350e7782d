"""Hugging Face `datasets` from local files, for LM corpora and labelled (classification) data.

`data.corpus` names one with `hf:PATH`, or just PATH for a `.parquet` / `.arrow` file or a folder
written by `save_to_disk`:
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` -> `load_from_disk`;
- a `.parquet`, `.arrow`, `.json`, `.jsonl` or `.csv` file, or a glob of them ->
  `load_dataset(<format>, data_files=...)`;
- any other folder of data files -> `load_dataset(folder)` (its splits from the file names,
  e.g. `train.parquet`, `validation.parquet`).
Splits: `data.train_split`, and `data.eval_split` when the data set has it; else the last
`data.validation_fraction` of the train rows (an LM corpus) or a seeded draw of them
(classification). Nothing is downloaded: paths must exist locally and the hub is switched off
while loading; a hub name gives one line saying how to save the data set to disk once.
`datasets` (the `hf` extra) is imported only here, only when used. Files read with
`load_dataset` are converted to Arrow once under `data.cache_dir` (default ~/.cache/jaxlm)/hf.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from jaxlm.errors import JaxlmError

PREFIX = "hf:"
FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json",
           ".csv": "csv"}
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes


def is_hf_spec(spec: str) -> bool:
    """True for `hf:PATH`, a .parquet/.arrow path (or glob) and a save_to_disk folder."""
    if spec.startswith(PREFIX):
        return True
    path = pathlib.Path(spec).expanduser()
    if path.suffix.lower() in (".parquet", ".arrow"):
        return True
    return path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS)


class Column(Sequence[str]):
    """One text column of a `datasets.Dataset`, read row by row from its memory-mapped Arrow."""

    def __init__(self, ds: Any, key: str):
        self.ds, self.key = ds, key

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):  # type: ignore[override]
        value = self.ds[int(i)][self.key]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _datasets():
    try:
        import datasets
    except ImportError:
        raise JaxlmError("Hugging Face datasets input needs the `datasets` package: "
                         "pip install 'jaxlm[hf]'") from None
    return datasets


@contextlib.contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """The hub switched off while loading (datasets reads the flag at call time)."""
    old = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = old


def _local(spec: str) -> tuple[str, list[str]]:
    """(the path as given, the local files or folder it names); a hub name is one line."""
    raw = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    path = os.path.expanduser(raw)
    found = sorted(glob.glob(path)) if any(c in path for c in "*?[") else (
        [path] if os.path.exists(path) else [])
    if not found:  # perhaps a hub name (`hf:imdb`, `hf:user/name`): say how to bring it
        raise JaxlmError(f"data.corpus={spec}: no such local file or folder; jaxlm reads Hugging "
                         "Face datasets from local files only (nothing is downloaded at run "
                         f"time): save one once with `datasets.load_dataset('{raw}')"
                         f".save_to_disk('DIR')` and set data.corpus=hf:DIR")
    return raw, found


def _load(spec: str, cache_dir: Optional[str]) -> Any:
    """The Dataset or DatasetDict that `spec` names (see the module docstring)."""
    raw, found = _local(spec)
    datasets = _datasets()
    cache = str(pathlib.Path(cache_dir or "~/.cache/jaxlm").expanduser() / "hf")
    first = pathlib.Path(found[0])
    try:
        with _offline(datasets):
            if len(found) == 1 and first.is_dir():
                if any((first / m).is_file() for m in _SAVED_MARKERS):
                    return datasets.load_from_disk(str(first))
                return datasets.load_dataset(str(first.resolve()), cache_dir=cache)
            formats = {FORMATS.get(pathlib.Path(f).suffix.lower()) for f in found}
            if None in formats or len(formats) != 1:
                names = [pathlib.Path(f).name for f in found][:5]
                raise JaxlmError(f"data.corpus={spec}: expected .parquet, .arrow, .json(l) or "
                                 f".csv files of one format; got {names}")
            files = [str(pathlib.Path(f).resolve()) for f in found]
            return datasets.load_dataset(formats.pop(), data_files=files, split="train",
                                         cache_dir=cache)
    except JaxlmError:
        raise
    except Exception as e:  # datasets/pyarrow raise many kinds for a bad or foreign file
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise JaxlmError(f"data.corpus={spec}: cannot read it as a Hugging Face dataset "
                         f"({type(e).__name__}: {msg})") from None


def load_splits(spec: str, *, train_split: str, eval_split: str,
                cache_dir: Optional[str]) -> tuple[Any, Optional[Any]]:
    """(train Dataset, eval Dataset or None when the data set has no `eval_split`)."""
    ds = _load(spec, cache_dir)
    if not hasattr(ds, "keys"):  # one Dataset: all of it is the train split
        return ds, None
    if train_split not in ds:
        raise JaxlmError(f"data.train_split='{train_split}' is not a split of {spec} "
                         f"(splits: {list(ds)})")
    return ds[train_split], ds[eval_split] if eval_split in ds else None


def check_text(ds: Any, key: str, what: str, spec: str) -> None:
    """`key` must be a string column of `ds` (`what`: the config key naming it)."""
    if key not in ds.column_names:
        raise JaxlmError(f"data.{what}='{key}' is not a column of {spec} "
                         f"(columns: {ds.column_names})")
    dtype = getattr(ds.features[key], "dtype", None)
    if what == "text_key" and dtype not in ("string", "large_string"):
        raise JaxlmError(f"data.text_key='{key}' of {spec} is not a text column "
                         f"({ds.features[key]})")


def hf_corpus(spec: str, *, text_key: str, train_split: str, eval_split: str,
              validation_fraction: float, cache_dir: Optional[str]):
    """An LM corpus: each row's `text_key` is a document."""
    from jaxlm.data.corpora import Corpus

    train, ev = load_splits(spec, train_split=train_split, eval_split=eval_split,
                            cache_dir=cache_dir)
    check_text(train, text_key, "text_key", spec)
    if ev is None:
        n = len(train)
        k = min(max(1, int(round(n * validation_fraction))), n - 1)
        if k < 1:
            raise JaxlmError(f"data.corpus={spec}: {n} row(s) cannot be split into train and eval")
        train, ev = train.select(range(n - k)), train.select(range(n - k, n))
    else:
        check_text(ev, text_key, "text_key", f"{spec} ({eval_split})")
    for split, docs in (("train", train), ("eval", ev)):
        if len(docs) == 0:
            raise JaxlmError(f"data.corpus: the {split} split of {spec} holds no rows")
    return Corpus(f"hf:{spec}", Column(train, text_key), Column(ev, text_key))


def hf_labelled(spec: str, *, text_key: str, label_key: str, train_split: str, eval_split: str,
                validation_fraction: float, seed: int, cache_dir: Optional[str]):
    """((train texts, labels), (eval texts, labels), class names of a ClassLabel column or
    None). Without an eval split, a seeded draw of `validation_fraction` of the rows."""
    train, ev = load_splits(spec, train_split=train_split, eval_split=eval_split,
                            cache_dir=cache_dir)
    for ds, where in ((train, spec), (ev, f"{spec} ({eval_split})")):
        if ds is not None:
            check_text(ds, text_key, "text_key", where)
            check_text(ds, label_key, "label_key", where)
    if ev is None:
        n = len(train)
        order = np.random.default_rng(seed).permutation(n)
        k = min(max(1, int(round(n * validation_fraction))), n - 1)
        if k < 1:
            raise JaxlmError(f"labelled data {spec} needs at least two rows")
        train, ev = train.select(sorted(order[k:])), train.select(sorted(order[:k]))
    names = getattr(train.features[label_key], "names", None)
    return ((Column(train, text_key), list(train[label_key])),
            (Column(ev, text_key), list(ev[label_key])), names)
