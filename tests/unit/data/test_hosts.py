"""jaxlm.data.hosts and per-host input (data.input=per_host): which documents each input shard
reads, the one-shard case being the global stream, and the data position of a whole run
through the Checkpointer (gathered, restored per shard, a different shard count refused)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxlm.checkpoint import Checkpointer
from jaxlm.data import pipeline
from jaxlm.data.hosts import HostPosition, InputShard
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError

# document i is made of one letter only, distinct per document: a row's bytes say its documents
DOCS = [chr(ord("a") + i) * (3 + 2 * i) for i in range(10)]
KW = dict(seq_len=8, global_batch=4, seed=3, shuffle_window=4)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _letters(batches) -> set[str]:
    tok = ByteTokenizer()
    ids = np.concatenate([b["inputs"][b["mask"]].ravel() for b in batches])
    return set(tok.decode([i for i in ids.tolist() if i != tok.eos_id]))


def test_input_shard_of_rows():
    assert InputShard.of_rows(slice(0, 4), 4) == InputShard(0, 1)
    assert InputShard.of_rows(slice(2, 4), 4) == InputShard(1, 2)
    assert InputShard.of_rows(slice(6, 8), 8) == InputShard(3, 4)
    with pytest.raises(JaxlmError, match="data.input=global"):
        InputShard.of_rows(slice(1, 4), 8)


def test_each_shard_reads_only_its_documents():
    tok = ByteTokenizer()
    for index in (0, 1):
        it = pipeline.train_iterator(DOCS, tok, shard=InputShard(index, 2), **KW)
        batches = _take(it, 6)
        assert all(b["inputs"].shape == (2, 8) for b in batches)  # its half of the rows
        # every one of its documents, none of the other shard's
        assert _letters(batches) == {d[0] for d in DOCS[index::2]}


def test_one_shard_is_the_global_stream():
    tok = ByteTokenizer()
    a = _take(pipeline.train_iterator(DOCS, tok, **KW), 3)
    b = _take(pipeline.train_iterator(DOCS, tok, shard=InputShard(0, 1), **KW), 3)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_fewer_documents_than_shards_is_refused():
    with pytest.raises(JaxlmError, match="2 documents, fewer than the 4 input shards"):
        pipeline.train_iterator(DOCS[:2], ByteTokenizer(), shard=InputShard(0, 4), **KW)


def _two_hosts(n_taken: int):
    """Both processes of a 2-host per-host run, simulated in one: process 0's HostPosition
    gathers process 1's position through a stand-in for the all-gather."""
    tok = ByteTokenizer()
    its = [pipeline.train_iterator(DOCS, tok, shard=InputShard(i, 2), **KW) for i in (0, 1)]
    for it in its:
        _take(it, n_taken)
    gather = lambda mine: [mine, [1, its[1].get_state()]]  # noqa: E731
    return HostPosition(its[0], "per_host", InputShard(0, 2), gather), its


def _save(directory, position) -> tuple:
    state = {"w": jnp.arange(3, dtype=jnp.float32)}
    ckpt = Checkpointer(directory, keep=2)
    ckpt.save(3, state, position)
    ckpt.close()
    abstract = jax.eval_shape(lambda: state)
    sh = NamedSharding(jax.make_mesh((1,), ("x",)), PartitionSpec())
    return abstract, jax.tree.map(lambda _: sh, abstract)


def test_every_shards_position_is_checkpointed_and_restored(tmp_path):
    position, its = _two_hosts(3)
    abstract, shardings = _save(tmp_path / "ckpt", position)
    expected = [_take(it, 3) for it in its]
    for index in (1,):  # process 1 of the resumed run: its position came through the gather
        fresh = pipeline.train_iterator(DOCS, ByteTokenizer(), shard=InputShard(index, 2), **KW)
        resumed = HostPosition(fresh, "per_host", InputShard(index, 2), gather=None)
        ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
        ckpt.restore(3, abstract, shardings, resumed)
        ckpt.close()
        got = _take(resumed, 3)
        assert all(np.array_equal(x[k], y[k]) for x, y in zip(got, expected[index]) for k in x)


@pytest.mark.parametrize("mode, shard, says", [
    ("per_host", InputShard(0, 1), "1 input shard (one host)"),
    ("global", InputShard(0, 1), "reads the global stream"),
])
def test_another_shard_count_is_refused_and_nothing_is_moved(tmp_path, mode, shard, says):
    position, _ = _two_hosts(2)
    abstract, shardings = _save(tmp_path / "ckpt", position)
    it = pipeline.train_iterator(DOCS, ByteTokenizer(), **KW)
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    with pytest.raises(JaxlmError) as e:
        ckpt.restore_latest(abstract, shardings, HostPosition(it, mode, shard, gather=None))
    ckpt.close()
    msg = str(e.value)
    assert "\n" not in msg and "2 per-host input shards" in msg and says in msg, msg
    assert "damaged" not in msg  # a whole checkpoint, not taken for a damaged one
    assert (tmp_path / "ckpt" / "3").is_dir() and not (tmp_path / "checkpoints.corrupt").exists()


def test_a_global_position_is_refused_by_several_shards(tmp_path):
    it = pipeline.train_iterator(DOCS, ByteTokenizer(), **KW)
    abstract, shardings = _save(tmp_path / "ckpt", HostPosition(it, "global", InputShard(0, 1)))
    shard_it = pipeline.train_iterator(DOCS, ByteTokenizer(), shard=InputShard(1, 2), **KW)
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    with pytest.raises(JaxlmError, match="one data stream .* 2 per-host input shards"):
        ckpt.restore(3, abstract, shardings,
                     HostPosition(shard_it, "per_host", InputShard(1, 2), gather=None))
    ckpt.close()


def test_data_input_names_its_choices():
    from jaxlm.config import load_config

    assert load_config(None, []).data.input == "per_host"
    with pytest.raises(JaxlmError, match="'data.input' must be one of per_host, global; got 'x'"):
        load_config(None, ["data.input=x"])
