"""A tensorflow-datasets builder that prepares local text files as ArrayRecord (no TensorFlow).

One builder class serves every local corpus: a BuilderConfig named by a key over the files'
paths, sizes and mtimes gives each corpus its own folder, and preparing again is a no-op.
A file is one document, except a JSON Lines file (`.jsonl`): each line is a JSON object and its
`text_key` field one document, as in Hugging Face datasets.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator, Optional, Sequence

import tensorflow_datasets as tfds

from jaxlm.errors import JaxlmError


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
    train_files: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    validation_files: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # With a single file and no validation files: the share of its last lines held out.
    single_file_validation: float = 0.0
    text_key: str = "text"  # the field of a .jsonl record that holds its text


class LocalTextCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.1")  # 1.0.1: one-line files split by characters
    BUILDER_CONFIGS: list = []

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # noqa: D401  tfds otherwise needs importlib_resources on Python >= 3.9
        return None

    def __init__(
        self, *, train_files: Optional[Sequence[str]] = None,
        validation_files: Sequence[str] = (), single_file_validation: float = 0.0,
        text_key: str = "text", key: str = "", config: Optional[LocalTextConfig] = None,
        **kwargs,
    ):
        # `config=` is how tfds re-creates the builder when unpickling it.
        if config is None:
            config = LocalTextConfig(
                name=key, version=self.VERSION, train_files=tuple(train_files or ()),
                validation_files=tuple(validation_files),
                single_file_validation=single_file_validation, text_key=text_key,
            )
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text files, one document per file or per JSON Lines record.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,  # keep file order
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.validation_files or not c.single_file_validation:
            return {
                "train": self._files(c.train_files),
                "validation": self._files(c.validation_files),
            }
        if is_jsonl(c.train_files[0]):  # whole records: the last ones held out
            docs = list(_records(c.train_files[0], c.text_key))
            if len(docs) < 2:
                raise JaxlmError(f"data.corpus: {c.train_files[0]} holds {len(docs)} record(s); "
                                 "a single .jsonl file needs at least two (train and eval)")
            cut = max(1, min(len(docs) - 1, round(len(docs) * (1 - c.single_file_validation))))
            return {"train": enumerate({"text": d} for d in docs[:cut]),
                    "validation": enumerate({"text": d} for d in docs[cut:])}
        text = _read(c.train_files[0])
        lines = text.splitlines(keepends=True)
        if len(lines) < 2:  # one line: split by characters instead
            lines = list(text)
        cut = max(1, min(len(lines) - 1, round(len(lines) * (1 - c.single_file_validation))))
        return {
            "train": iter([(0, {"text": "".join(lines[:cut])})]),
            "validation": iter([(0, {"text": "".join(lines[cut:])})]),
        }

    def _files(self, paths: Sequence[str]) -> Iterator[tuple[int, dict]]:
        i = 0
        for p in paths:
            for text in _records(p, self.builder_config.text_key) if is_jsonl(p) else [_read(p)]:
                yield i, {"text": text}
                i += 1

    def _generate_examples(self, **kwargs):  # required by the base class; unused
        raise NotImplementedError


def is_jsonl(path: str) -> bool:
    return path.lower().endswith(".jsonl")


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _records(path: str, text_key: str) -> Iterator[str]:
    """The `text_key` field of each record of a JSON Lines file (blank lines skipped)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise JaxlmError(f"data.corpus: {path}:{n} is not a JSON object ({e.msg}); a "
                                 ".jsonl corpus holds one JSON object per line") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                fields = list(record) if isinstance(record, dict) else type(record).__name__
                what = "no" if not isinstance(record, dict) or text_key not in record else \
                    "a non-string"
                raise JaxlmError(f"data.corpus: {path}:{n} has {what} field '{text_key}' "
                                 f"(data.text_key; the record has {fields})")
            yield record[text_key]
