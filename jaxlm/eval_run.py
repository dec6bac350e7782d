"""`jaxlm eval --workdir DIR`: evaluate a run directory's checkpoint on its eval split.

Language models (clm): eval_loss, eval_perplexity, eval_bpb and next-token accuracy; masked LMs
(mlm): the same over the masked positions (masked-token accuracy); classifiers: accuracy and
macro precision, recall and F1 over the validation split. The same jitted eval step as training.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator, Optional

import jax
import numpy as np

from jaxlm import sharding
from jaxlm.config import MeshConfig, RunConfig
from jaxlm.data import labelled, pipeline
from jaxlm.data.corpora import load_corpus
from jaxlm.data.tokenizers import Tokenizer
from jaxlm.errors import JaxlmError
from jaxlm.evaluate import evaluate
from jaxlm.models import build_model
from jaxlm.train.optim import build_optimizer, schedule
from jaxlm.train.state import state_shardings
from jaxlm.train.step import MlmSpec, compile_steps


def mlm_spec(tokenizer: Tokenizer, mask_prob: float) -> MlmSpec:
    mask_id = getattr(tokenizer, "mask_id", None)
    if mask_id is None:
        raise JaxlmError("model.objective=mlm needs a tokenizer with a mask token")
    # random replacements: any ordinary token (the specials pad/eos/mask/unk are ids < 3)
    return MlmSpec(int(mask_id), 3, int(tokenizer.vocab_size), float(mask_prob))


def _eval_data(cfg: RunConfig, tokenizer: Tokenizer, batch: int, max_batches: int
               ) -> Iterator[dict[str, np.ndarray]]:
    d = cfg.data
    if cfg.model.objective == "classify":
        data = labelled.load_labelled(
            d.corpus, num_labels=cfg.model.num_labels, text_key=d.text_key,
            label_key=d.label_key, train_split=d.train_split, eval_split=d.eval_split,
            validation_fraction=d.validation_fraction, seed=d.seed,
            tfds_data_dir=d.tfds_data_dir, tfds_download=d.tfds_download)
        return labelled.eval_batches(data.eval, data.eval_labels, tokenizer, seq_len=d.seq_len,
                                     global_batch=batch, max_batches=max_batches)
    corpus = load_corpus(
        d.corpus, validation_fraction=d.validation_fraction, text_key=d.text_key,
        train_split=d.train_split, eval_split=d.eval_split, tfds_data_dir=d.tfds_data_dir,
        tfds_download=d.tfds_download, cache_dir=d.cache_dir)
    return pipeline.eval_batches(corpus.eval, tokenizer, seq_len=d.seq_len, global_batch=batch,
                                 max_batches=max_batches)


def _setup(workdir: str | pathlib.Path, step: Optional[int]):
    from jaxlm.interop.rundir import load_run, read_run_config

    cfg = read_run_config(workdir)
    mesh = sharding.make_mesh(MeshConfig())  # all local devices, data-parallel
    dp = sharding.data_parallel_size(mesh)
    batch = -(-cfg.train.batch_size // dp) * dp
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optim, cfg.train.steps)
    _, shardings = state_shardings(model, optimizer, cfg.data.seq_len, mesh)
    run = load_run(workdir, step=step, shardings=shardings.params)
    if run.tokenizer is None:
        raise JaxlmError(f"{workdir} has no tokenizer (tokenizer.json) to read its data with")
    mlm = mlm_spec(run.tokenizer, cfg.train.mask_prob) if cfg.model.objective == "mlm" else None
    _, eval_step = compile_steps(model, optimizer, schedule(cfg.optim, cfg.train.steps),
                                 shardings, mesh, objective=cfg.model.objective, mlm=mlm,
                                 num_labels=cfg.model.num_labels)
    batch_sh = sharding.batch_sharding(mesh)

    def put(b: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.device_put(v, batch_sh if v.ndim == 2 else
                                  jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
                                      ("data", "fsdp")))) for k, v in b.items()}

    return cfg, run, model, eval_step, put, batch, mesh


def evaluate_run(workdir: str | pathlib.Path, *, step: Optional[int] = None,
                 max_batches: int = 0) -> dict[str, Any]:
    """The eval metrics of a run's checkpoint (`step`, default the newest) over its eval split
    (`max_batches` > 0: only the first batches); adds `objective` and `step`."""
    cfg, run, _, eval_step, put, batch, mesh = _setup(workdir, step)
    token_bytes = jax.device_put(run.tokenizer.token_bytes().astype(np.float32),
                                 sharding.replicated(mesh))
    out = evaluate(eval_step, run.params, _eval_data(cfg, run.tokenizer, batch, max_batches),
                   token_bytes, put)
    return {"objective": cfg.model.objective, "step": run.step, **out}


def predict_labels(workdir: str | pathlib.Path, *, step: Optional[int] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A classifier run's (true labels, predicted labels) over its validation split."""
    cfg, run, model, _, _, batch, _ = _setup(workdir, step)
    if cfg.model.objective != "classify":
        raise JaxlmError(f"{workdir} is not a classifier (model.objective={cfg.model.objective})")
    apply = jax.jit(lambda p, x, v: model.apply({"params": p}, x, valid_bt=v).argmax(-1))
    true, pred = [], []
    for b in _eval_data(cfg, run.tokenizer, batch, 0):
        keep = b["mask"]
        true.append(b["targets"][keep])
        pred.append(np.asarray(apply(run.params, b["inputs"], b["valid"]))[keep])
    return np.concatenate(true), np.concatenate(pred)
