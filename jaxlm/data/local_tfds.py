"""A tensorflow-datasets builder that prepares local text files as ArrayRecord (no TensorFlow).

One builder class serves every local corpus: a BuilderConfig named by a key over the files'
paths, sizes and mtimes gives each corpus its own folder, and preparing again is a no-op.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import tensorflow_datasets as tfds


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
    train_files: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    validation_files: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # With a single file and no validation files: the share of its last lines held out.
    single_file_validation: float = 0.0


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
        key: str = "", config: Optional[LocalTextConfig] = None, **kwargs,
    ):
        # `config=` is how tfds re-creates the builder when unpickling it.
        if config is None:
            config = LocalTextConfig(
                name=key, version=self.VERSION, train_files=tuple(train_files or ()),
                validation_files=tuple(validation_files),
                single_file_validation=single_file_validation,
            )
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text files, one document per file.",
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
        for i, p in enumerate(paths):
            yield i, {"text": _read(p)}

    def _generate_examples(self, **kwargs):  # required by the base class; unused
        raise NotImplementedError


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")
