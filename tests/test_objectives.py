"""Objectives beyond next-token LM: masked LM (BERT corruption, bidirectional encoder) and
sequence classification (heads, pooling, labelled data, metrics vs scikit-learn, fine-tuning)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import ModelConfig, load_config
from jaxlm.data import labelled
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError
from jaxlm.evaluate import classification_metrics
from jaxlm.models import build_model
from jaxlm.train.step import MlmSpec, loss_and_grads, mlm_corrupt, token_nats

from conftest import REPO_ROOT, jaxlm_cmd, run_all

VOCAB = 259
ENC = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                  objective="mlm")
SPEC = MlmSpec(mask_id=2, random_low=3, random_high=VOCAB, prob=0.15)
MODEL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.max_seq_len=64",
         "data.seq_len=64", "train.batch_size=16"]


def _tokens(b, t, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 3, VOCAB, dtype=jnp.int32)


# ---------------------------------------------------------------------------------------------
# masked LM: corruption, loss, bidirectionality


def test_corruption_statistics():
    tokens = _tokens(256, 512)
    valid = jnp.arange(512)[None, :] < 480  # the tail is padding: never selected
    valid = jnp.broadcast_to(valid, tokens.shape)
    out = jax.jit(lambda r: mlm_corrupt(r, tokens, valid, SPEC))(jax.random.PRNGKey(1))
    inp, tgt, sel = (np.asarray(out[k]) for k in ("inputs", "targets", "mask"))
    tok = np.asarray(tokens)
    assert np.array_equal(tgt, tok)
    assert not sel[:, 480:].any()
    assert np.array_equal(inp[~sel], tok[~sel])  # only selected positions change
    n_valid = int(np.asarray(valid).sum())
    assert abs(sel.sum() / n_valid - 0.15) < 0.003
    s_in, s_tok = inp[sel], tok[sel]
    masked = s_in == SPEC.mask_id
    same = s_in == s_tok
    rand = ~masked & ~same
    assert abs(masked.mean() - 0.80) < 0.01
    # 10% kept, plus random replacements that drew the original token (1 in 256)
    assert abs(same.mean() - (0.10 + 0.10 / 256)) < 0.007
    assert abs(rand.mean() - 0.10 * 255 / 256) < 0.007
    assert s_in[rand].min() >= 3 and s_in[rand].max() < VOCAB
    # pure: the same key gives the same corruption, another key another
    again = mlm_corrupt(jax.random.PRNGKey(1), tokens, valid, SPEC)
    assert np.array_equal(np.asarray(again["inputs"]), inp)
    other = mlm_corrupt(jax.random.PRNGKey(2), tokens, valid, SPEC)
    assert not np.array_equal(np.asarray(other["mask"]), sel)


def test_mlm_loss_counts_selected_positions_only():
    model = build_model(ENC)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"])
    tokens = _tokens(4, 16)
    batch = mlm_corrupt(jax.random.PRNGKey(3), tokens, jnp.ones_like(tokens, bool), SPEC)
    lg = jax.jit(lambda p, b: loss_and_grads(p, b, jax.random.PRNGKey(0), model=model))
    loss, _, n = lg(params, batch)
    sel = np.asarray(batch["mask"])
    assert int(n) == sel.sum() > 0
    nats = np.asarray(token_nats(model.apply({"params": params}, batch["inputs"]), tokens))
    np.testing.assert_allclose(float(loss), nats[sel].mean(), rtol=1e-5)
    # targets at unselected positions do not matter
    scrambled = dict(batch, targets=jnp.where(batch["mask"], tokens, 7))
    loss2, _, _ = lg(params, scrambled)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_encoder_is_not_causal(scan):
    """d logits[:, t] / d embeddings[:, s] is nonzero for every s, later positions included."""
    cfg = ModelConfig(**{**ENC.__dict__, "scan_layers": scan, "remat": "full" if scan else "none"})
    model = build_model(cfg)
    T = 8
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, T), jnp.int32))
    params = nn.meta.unbox(variables["params"])
    zeros = jax.tree.map(jnp.zeros_like, variables["perturbations"])
    tokens = _tokens(2, T)

    def logit_sum(pert, t):
        logits = model.apply({"params": params, "perturbations": pert}, tokens)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False).sum()

    (g,) = jax.tree.leaves(jax.jit(jax.vmap(lambda t: jax.grad(logit_sum)(zeros, t)))(
        jnp.arange(T)))
    g = np.abs(np.asarray(g)).sum(-1)  # (T, b, T)
    assert np.all(g > 0), "an encoder output ignores some position (later ones included)"


def test_generation_refuses_mlm():
    from jaxlm.generate import generate

    model = build_model(ENC)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    with pytest.raises(JaxlmError, match="masked-LM"):
        generate(model, params, [5, 6], max_new_tokens=2)


def test_config_rules():
    with pytest.raises(JaxlmError, match="model.family=transformer"):
        load_config(None, ["model.objective=mlm", "model.family=lstm"])
    with pytest.raises(JaxlmError, match="model.objective"):
        load_config(None, ["model.objective=seq2seq"])
    with pytest.raises(JaxlmError, match="freeze_backbone"):
        load_config(None, ["train.freeze_backbone=true"])
    with pytest.raises(JaxlmError, match="unset model.causal"):
        load_config(None, ["model.objective=mlm", "model.causal=true"])


# ---------------------------------------------------------------------------------------------
# classification: heads, pooling, padding, metrics, data


@pytest.mark.parametrize("pooling,causal", [("last", True), ("first", False), ("mean", False)])
def test_classifier_ignores_padding(pooling, causal):
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                      objective="classify", num_labels=3, pooling=pooling, causal=causal)
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]
    tokens = _tokens(2, 16)
    valid = jnp.arange(16)[None, :] < jnp.array([[10], [16]])
    logits = model.apply({"params": params}, tokens, valid_bt=valid)
    assert logits.shape == (2, 3)
    other_pad = jnp.where(valid, tokens, 0 if pooling == "mean" else 77)
    logits2 = model.apply({"params": params}, other_pad, valid_bt=valid)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(logits2), atol=1e-5)
    short = model.apply({"params": params}, tokens[:1, :10])  # the same row, unpadded
    np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(short[0]), atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_sklearn(seed):
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))  # class 3 never predicted
    if seed == 3:
        y, p = y % 3, p % 3  # class 3 absent from both: not averaged over (as scikit-learn)
    conf = np.zeros((k, k))
    np.add.at(conf, (y, p), 1)
    got = classification_metrics(conf)
    assert got["eval_accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        want = fn(y, p, average="macro", zero_division=0)
        assert got[f"eval_{name}"] == pytest.approx(want), name


def _labelled_rows(n: int, seed: int = 0) -> list[dict]:
    """Label 1 iff the text contains 'zebra': learnable from a few hundred rows."""
    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "green", "table", "music", "light", "paper",
             "storm", "quiet", "metal", "zone", "bread"]
    rows = []
    for i in range(n):
        ws = [rng.choice(words) for _ in range(rng.randint(4, 9))]
        if i % 2:
            ws.insert(rng.randrange(len(ws) + 1), "zebra")
        rows.append({"text": " ".join(ws), "label": i % 2})
    return rows


def test_labelled_files_and_iterator(tmp_path):
    rows = _labelled_rows(50)
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


# ---------------------------------------------------------------------------------------------
# end to end through the CLI: an MLM run, then a classifier fine-tuned from it


_ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return _ok(subprocess.run(jaxlm_cmd(*args), cwd=REPO_ROOT, env=_ENV, capture_output=True,
                              text=True, timeout=timeout))


def _final(workdir: pathlib.Path) -> dict:
    recs = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r.get("event") == "final"][-1]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("mlm") / "run"
    _cli("train", "--workdir", str(wd), "--quiet", "model.objective=mlm", *MODEL,
         "train.steps=150", "optim.lr=3e-3", "optim.warmup_steps=10", "train.eval_every=0",
         "train.final_eval_batches=10", "train.checkpoint_every=0")
    return wd


def test_mlm_run_learns(mlm_run, cls_run_and_mlm_eval):
    final = _final(mlm_run)
    # chance: 1/256 bytes; always guessing the commonest byte of the eval text scores ~0.15
    assert final["eval_accuracy"] > 0.25, final
    assert final["eval_perplexity"] < 40, final
    samples = mlm_run / "samples.txt"
    assert not samples.exists() or samples.read_text() == ""  # an encoder does not sample
    out = json.loads(_ok(cls_run_and_mlm_eval[2]).stdout)
    assert out["objective"] == "mlm" and out["step"] == 150
    assert out["eval_accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-6)
    assert out["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "zebra.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _labelled_rows(600)))
    return path


@pytest.fixture(scope="module")
def cls_run_and_mlm_eval(mlm_run, cls_data, tmp_path_factory):
    """A classifier fine-tuned from the MLM run, trained while `jaxlm eval` scores the MLM run
    (both only read it): (its run directory, the train process, the eval process)."""
    wd = tmp_path_factory.mktemp("cls") / "run"
    train_proc, eval_proc = run_all([
        jaxlm_cmd("train", "--workdir", str(wd), "--quiet", "model.objective=classify",
                  "model.causal=false", f"train.init_from={mlm_run}", f"data.corpus={cls_data}",
                  "data.validation_fraction=0.2", *MODEL, "train.steps=150", "optim.lr=3e-3",
                  "optim.warmup_steps=10", "train.eval_every=0", "train.final_eval_batches=0",
                  "train.checkpoint_every=0"),
        jaxlm_cmd("eval", "--workdir", str(mlm_run), "--max-batches", "10", "--json"),
    ], env=_ENV)
    return wd, train_proc, eval_proc


@pytest.fixture(scope="module")
def cls_run(cls_run_and_mlm_eval):
    wd, train_proc, _ = cls_run_and_mlm_eval
    _ok(train_proc)
    return wd


def test_classifier_learns_and_eval_matches_sklearn(cls_run):
    from sklearn import metrics as skm

    from jaxlm.eval_run import predict_labels

    final = _final(cls_run)
    assert final["eval_accuracy"] > 0.9 and final["eval_f1"] > 0.9, final
    assert final["eval_examples"] == 120
    out = json.loads(_cli("eval", "--workdir", str(cls_run), "--json").stdout)
    y, p = predict_labels(cls_run)
    assert len(y) == 120
    assert out["eval_accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert out[f"eval_{name}"] == pytest.approx(fn(y, p, average="macro", zero_division=0))


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_finetune_starts_from_checkpoint_and_freezes(mlm_run, cls_data, tmp_path):
    """train.freeze_backbone: after training, every backbone weight is still exactly the
    checkpoint's (so it started from them), and only the head moved."""
    from jaxlm.interop import load_run
    from jaxlm.train.loop import train

    cfg = load_config(None, ["model.objective=classify", "model.causal=false",
                             f"train.init_from={mlm_run}", f"data.corpus={cls_data}", *MODEL,
                             "train.steps=3", "optim.warmup_steps=1", "train.eval_every=0",
                             "train.final_eval_batches=1", "train.freeze_backbone=true",
                             "model.scan_layers=true"])
    result = train(cfg, tmp_path / "ft", quiet=True)
    src = load_run(mlm_run).params
    got = _leaves({k: v for k, v in jax.device_get(result.params).items() if k != "classifier"})
    from jaxlm.init_from import match_layout

    want = _leaves(match_layout(jax.device_get(src), cfg.model))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert np.abs(np.asarray(result.params["classifier"]["kernel"])).sum() > 0


def test_head_mismatch_is_a_clear_error(cls_run, cls_data, tmp_path):
    from jaxlm.train.loop import train

    cfg = load_config(None, ["model.objective=classify", "model.causal=false",
                             f"train.init_from={cls_run}", f"data.corpus={cls_data}", *MODEL,
                             "model.num_labels=3", "train.steps=2", "optim.warmup_steps=1"])
    with pytest.raises(JaxlmError, match=r"classifier.*num_labels"):
        train(cfg, tmp_path / "bad", quiet=True)
    cfg = load_config(None, ["model.objective=classify", f"train.init_from={cls_run}",
                             f"data.corpus={cls_data}", *MODEL, "model.d_model=32",
                             "train.steps=2", "optim.warmup_steps=1"])
    with pytest.raises(JaxlmError, match="d_model"):
        train(cfg, tmp_path / "bad2", quiet=True)


def test_mlm_resume_is_exact(tmp_path):
    """MLM corruption comes from the step's rng: a resumed run equals an uninterrupted one."""
    from jaxlm.train.loop import train

    over = ["model.objective=mlm", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
            "model.max_seq_len=32", "data.seq_len=32", "train.batch_size=4", "train.steps=4",
            "optim.warmup_steps=1", "train.eval_every=0", "train.final_eval_batches=1",
            "train.checkpoint_every=2", "model.remat=full", "train.grad_accum=2"]
    cfg = load_config(None, over)
    full = train(cfg, tmp_path / "a", quiet=True)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
    resumed = train(cfg, tmp_path / "b", quiet=True)
    for k, v in _leaves(jax.device_get(full.params)).items():
        np.testing.assert_array_equal(_leaves(jax.device_get(resumed.params))[k], v, err_msg=k)
