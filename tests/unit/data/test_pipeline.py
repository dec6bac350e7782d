"""jaxlm.data.pipeline: packing of eval batches, the train iterator (shapes, seeds, local
rows) and its state, restored through the Checkpointer."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from jaxlm.data import pipeline
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError


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
