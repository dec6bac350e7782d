"""What a run reads, by objective: a corpus of documents (clm, mlm) or labelled rows
(classify), and its train iterator and eval batches. Training and `jaxlm eval` share it."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import numpy as np

from jaxlm.config import DataConfig
from jaxlm.data import labelled, pipeline
from jaxlm.data.corpora import Corpus, load_corpus
from jaxlm.data.tokenizers import Tokenizer

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class RunData:
    corpus: Corpus  # classify: the rows' texts
    rows: Optional[labelled.LabelledData]  # classify only
    data: DataConfig

    def train_iterator(self, tokenizer: Tokenizer, global_batch: int,
                       local_rows: Optional[slice] = None) -> Iterator[Batch]:
        """Endless (global_batch, seq_len) batches, this process's `local_rows` of each; a Grain
        iterator (its state is what checkpoints record)."""
        d = self.data
        if self.rows is not None:
            return labelled.train_iterator(
                self.rows.train, self.rows.train_labels, tokenizer, seq_len=d.seq_len,
                global_batch=global_batch, seed=d.seed, local_rows=local_rows)
        return pipeline.train_iterator(
            self.corpus.train, tokenizer, seq_len=d.seq_len, global_batch=global_batch,
            seed=d.seed, shuffle_window=d.shuffle_window, local_rows=local_rows)

    def eval_batches(self, tokenizer: Tokenizer, global_batch: int, max_batches: int,
                     local_rows: Optional[slice] = None) -> Iterator[Batch]:
        """The eval split in order (`max_batches` 0: all of it)."""
        d = self.data
        if self.rows is not None:
            return labelled.eval_batches(self.rows.eval, self.rows.eval_labels, tokenizer,
                                         seq_len=d.seq_len, global_batch=global_batch,
                                         max_batches=max_batches, local_rows=local_rows)
        return pipeline.eval_batches(self.corpus.eval, tokenizer, seq_len=d.seq_len,
                                     global_batch=global_batch, max_batches=max_batches,
                                     local_rows=local_rows)


def load_run_data(d: DataConfig, objective: str, num_labels: Optional[int]) -> RunData:
    """The documents (or labelled rows, for objective=classify) that `d` names."""
    if objective == "classify":
        rows = labelled.load_labelled(
            d.corpus, num_labels=num_labels, text_key=d.text_key, label_key=d.label_key,
            train_split=d.train_split, eval_split=d.eval_split,
            validation_fraction=d.validation_fraction, seed=d.seed,
            tfds_data_dir=d.tfds_data_dir, tfds_download=d.tfds_download, cache_dir=d.cache_dir)
        return RunData(Corpus(rows.name, rows.train, rows.eval), rows, d)
    corpus = load_corpus(
        d.corpus, validation_fraction=d.validation_fraction, text_key=d.text_key,
        train_split=d.train_split, eval_split=d.eval_split, tfds_data_dir=d.tfds_data_dir,
        tfds_download=d.tfds_download, cache_dir=d.cache_dir)
    return RunData(corpus, None, d)
