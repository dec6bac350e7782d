"""Grain input pipeline: shuffle -> tokenize (+EOS) -> pack -> batch -> this process's rows.

Documents are packed back to back, separated by EOS, into rows of seq_len + 1 tokens
(grain's concat-then-split); a row gives inputs = row[:-1] and targets = row[1:]. Attention
may cross document boundaries inside a row, as in GPT-2 / nanoGPT training.

Multi-host, two modes (`data.input`):
- per_host (`shard`, see jaxlm.data.hosts): each process reads, tokenizes and packs only the
  documents of its input shard (every count-th document) into its own rows. Each host does 1/P
  of the work, so the input rate grows with the hosts; the data a run sees depends on the host
  count (the same run given the same count), and so does its checkpointed position.
- global (`local_rows`): every process walks the same global stream and keeps only the rows of
  each global batch that its devices hold. The run is the same run on any number of hosts (and
  resumes exactly across a change of topology), and the data position is one iterator state,
  identical on every process; but each host tokenizes the whole stream.
With one host the two are the same stream.
The train iterator is a grain `DatasetIterator`: `get_state()` / `set_state()` checkpoint it.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import grain
import numpy as np
from grain.experimental import ConcatThenSplitIterDataset, WindowShuffleIterDataset

from jaxlm.data.hosts import InputShard
from jaxlm.data.tokenizers import Tokenizer
from jaxlm.errors import JaxlmError

Batch = dict[str, np.ndarray]  # inputs, targets (b, t) int32; mask (b, t) bool


def _tokenized(texts: Sequence[str], tokenizer: Tokenizer) -> grain.MapDataset:
    eos = np.asarray([tokenizer.eos_id], np.int32)
    return grain.MapDataset.source(texts).map(
        lambda text: {"tokens": np.concatenate([tokenizer.encode(text), eos])}
    )


def _to_model_batch(row: dict) -> Batch:
    tokens, seg = row["tokens"], row["tokens_segment_ids"]
    return {
        "inputs": tokens[..., :-1].astype(np.int32),
        "targets": tokens[..., 1:].astype(np.int32),
        "mask": seg[..., 1:] > 0,
    }


def _select_rows(batch: Batch, rows: Optional[slice]) -> Batch:
    return batch if rows is None else {k: v[rows] for k, v in batch.items()}


def train_iterator(
    texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int, global_batch: int, seed: int,
    shuffle_window: int = 1024, local_rows: Optional[slice] = None,
    shard: InputShard = InputShard(0, 1),
) -> grain.DatasetIterator:
    """Endless, reshuffled each epoch, checkpointable. Yields Batch of (rows, seq_len): the
    `local_rows` of each (global_batch, seq_len) batch (all of them when None); or, for a
    `shard` of count > 1, its own (global_batch / count, seq_len) rows, packed from documents
    shard.index, shard.index + count, ... only.

    Packed rows are shuffled again within windows of `shuffle_window` rows: a long document
    otherwise fills whole batches with consecutive chunks of itself (0 turns this off).
    """
    if len(texts) == 0:
        raise JaxlmError("the training split has no documents")
    docs = grain.MapDataset.source(texts)
    if shard.count > 1:
        if local_rows is not None:
            raise ValueError("a per-host shard is this process's rows already: no local_rows")
        if len(texts) < shard.count:
            raise JaxlmError(f"data.input=per_host: the training split has {len(texts)} "
                             f"documents, fewer than the {shard.count} input shards (one per "
                             f"host); use data.input=global")
        docs, global_batch = docs[shard.index::shard.count], global_batch // shard.count
    ds = _tokenized(docs, tokenizer).shuffle(seed=seed).repeat(None)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=64))
    it_ds = ConcatThenSplitIterDataset(it_ds, length_struct={"tokens": seq_len + 1})
    if shuffle_window > 1:
        it_ds = WindowShuffleIterDataset(it_ds, window_size=shuffle_window, seed=seed + 1)
    it_ds = it_ds.batch(global_batch, drop_remainder=True)
    return iter(it_ds.map(lambda b: _select_rows(_to_model_batch(b), local_rows)))


def eval_batches(
    texts: Sequence[str], tokenizer: Tokenizer, *, seq_len: int, global_batch: int,
    max_batches: int = 0, local_rows: Optional[slice] = None,
) -> Iterator[Batch]:
    """The eval split once, in order; the last batch is padded with masked rows to full size.

    max_batches > 0 stops after that many batches (the same ones every time). Every process
    sees the same batches (so all agree on their number) and keeps its `local_rows`.
    """
    if len(texts) == 0:
        raise JaxlmError("the evaluation split has no documents")
    ds = _tokenized(grain.MapDataset.source(texts), tokenizer)
    it_ds = ConcatThenSplitIterDataset(
        ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=64)),
        length_struct={"tokens": seq_len + 1},
    )
    it_ds = it_ds.batch(global_batch, drop_remainder=False).map(_to_model_batch)
    for i, batch in enumerate(it_ds):
        if max_batches and i >= max_batches:
            return
        short = global_batch - batch["inputs"].shape[0]
        if short:
            batch = {k: np.concatenate([v, np.zeros((short,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        yield _select_rows(batch, local_rows)
