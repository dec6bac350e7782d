"""`jaxlm eval --workdir DIR`: evaluate a run directory's checkpoint on its eval split.

Language models (clm): eval_loss, eval_perplexity, eval_bpb and next-token accuracy; masked LMs
(mlm): the same over the masked positions (masked-token accuracy); classifiers: accuracy and
macro precision, recall and F1 over the validation split. The same jitted eval step as training.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Optional

import jax
import numpy as np

from jaxlm import progress, rundir, sharding
from jaxlm.config import MeshConfig
from jaxlm.data.source import load_run_data
from jaxlm.errors import JaxlmError
from jaxlm.evaluate import evaluate, with_coverage
from jaxlm.train.setup import assemble


def _setup(workdir: str | pathlib.Path, step: Optional[int]):
    """The run's config and checkpoint params, its data, and the assembly training uses, on a
    data-parallel mesh over all local devices (the batch rounded up to divide over it)."""
    cfg = rundir.read_config(workdir)
    mesh = sharding.make_mesh(MeshConfig())
    dp = sharding.data_parallel_size(mesh)
    batch = -(-cfg.train.batch_size // dp) * dp
    if not rundir.has_tokenizer(workdir):
        raise JaxlmError(f"{workdir} has no tokenizer (jaxlm_tokenizer.json) to read its data with")
    run = rundir.load_run(workdir, step=step)
    asm = assemble(cfg, mesh, run.tokenizer)
    params = jax.device_put(run.params, asm.shardings.params)
    data = load_run_data(cfg.data, cfg.model.objective, cfg.model.num_labels)
    put = functools.partial(sharding.put_batch, mesh, global_batch=batch)
    return cfg, run, params, asm, data, put, batch, mesh


def evaluate_run(workdir: str | pathlib.Path, *, step: Optional[int] = None,
                 max_batches: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """The eval metrics of a run's checkpoint (`step`, default the newest) over its eval split
    (`max_batches` > 0: only the first batches); adds `objective`, `step`, and what was
    measured (`eval_batches`, `eval_full_split`; see jaxlm.evaluate.with_coverage).
    `show_progress`: a progress bar on stderr."""
    cfg, run, params, asm, data, put, batch, mesh = _setup(workdir, step)
    token_bytes = jax.device_put(run.tokenizer.token_bytes().astype(np.float32),
                                 sharding.replicated(mesh))
    bar = progress.progress(max_batches or None, desc="eval", unit="batch",
                            enabled=show_progress and jax.process_index() == 0)
    out = evaluate(asm.eval_step, params, data.eval_batches(run.tokenizer, batch, max_batches),
                   token_bytes, put, bar=bar)
    return {"objective": cfg.model.objective, "step": run.step,
            **with_coverage(out, max_batches)}


def predict_labels(workdir: str | pathlib.Path, *, step: Optional[int] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A classifier run's (true labels, predicted labels) over its validation split."""
    cfg, run, params, asm, data, _, batch, _ = _setup(workdir, step)
    if cfg.model.objective != "classify":
        raise JaxlmError(f"{workdir} is not a classifier (model.objective={cfg.model.objective})")
    model = asm.model
    apply = jax.jit(lambda p, x, v: model.apply({"params": p}, x, valid_bt=v).argmax(-1))
    true, pred = [], []
    for b in data.eval_batches(run.tokenizer, batch, 0):
        keep = b["mask"]
        true.append(b["targets"][keep])
        pred.append(np.asarray(apply(params, b["inputs"], b["valid"]))[keep])
    return np.concatenate(true), np.concatenate(pred)
