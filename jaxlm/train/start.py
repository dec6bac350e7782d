"""Opening a training run: the run directory, data, tokenizer, mesh, the assembly shared with
evaluation, and the state (resumed from the newest whole checkpoint, or fresh), then the `start`
record that says what runs where. `jaxlm.train.loop` runs the steps."""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxlm import config as config_lib
from jaxlm import flops, rundir, sharding
from jaxlm.checkpoint import Checkpointer, checkpoint_steps
from jaxlm.config import RunConfig
from jaxlm.data.hosts import HostPosition
from jaxlm.data.prefetch import DevicePrefetcher
from jaxlm.data.source import RunData, load_run_data
from jaxlm.data.tokenizers import Tokenizer, select_tokenizer
from jaxlm.errors import JaxlmError
from jaxlm.init_from import init_state_from
from jaxlm.train import branch, memory
from jaxlm.train import metrics as metrics_lib
from jaxlm.train.setup import Assembly, assemble
from jaxlm.train.state import init_state
from jaxlm.train.step import abstract_batch


@dataclasses.dataclass
class OpenRun:
    """Everything `train` sets up before its first step."""
    cfg: RunConfig  # model.vocab_size resolved
    workdir: pathlib.Path
    main: bool  # process 0: writes the run directory's files
    log: Callable[[str], None]  # status lines (unless quiet)
    warn: Callable[[str], None]  # warnings (even when quiet)
    show: bool
    data: RunData
    tokenizer: Tokenizer
    mesh: jax.sharding.Mesh
    asm: Assembly
    put: Callable[[dict], dict]  # this process's rows -> a global batch on the mesh
    rows: slice  # this process's rows of each global batch
    token_bytes: jax.Array
    batches: HostPosition  # over a DevicePrefetcher
    ckpt: Checkpointer
    state: Any
    start_step: int
    skipped: int
    writer: metrics_lib.MetricsWriter
    model_fpt: float  # model FLOPs per token (MFU)
    peak: float
    peak_source: str
    compile_time: float = 0.0  # compiling the train step before the first step (memory check)



def open_run(cfg: RunConfig, workdir: pathlib.Path, resuming: bool, quiet: bool) -> OpenRun:
    """The run directory, data, tokenizer, mesh, assembly and state: resumed from the newest
    whole checkpoint (`resuming`: rundir.check_resumable said so), or fresh (from
    `train.init_from` weights when set)."""
    main = jax.process_index() == 0
    show = main and not quiet
    log = functools.partial(metrics_lib.log, enabled=show)
    warn = functools.partial(metrics_lib.log, enabled=main)
    d, t = cfg.data, cfg.train

    data = load_run_data(d, cfg.model.objective, cfg.model.num_labels)
    # a branch's token ids are its trunk's
    source = str(branch.parse(t.branch_from)[0]) if t.branch_from else t.init_from
    tokenizer = select_tokenizer(d, data.corpus.train, workdir, source, log, show,
                                 "train.branch_from" if t.branch_from else "train.init_from")
    if cfg.model.vocab_size is None:
        cfg = config_lib.replace(cfg, **{"model.vocab_size": tokenizer.vocab_size})
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise JaxlmError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                         f"tokenizer's {tokenizer.vocab_size} tokens")
    if t.branch_from and not resuming:  # refused before anything is built or written
        branch.check_trunk(cfg)

    mesh = sharding.make_mesh(cfg.mesh, sharding.devices_for_batch(
        cfg.mesh, t.batch_size // t.grad_accum))
    dp = sharding.data_parallel_size(mesh)
    if t.batch_size % (dp * t.grad_accum):
        accum = f" x train.grad_accum={t.grad_accum} microbatches" if t.grad_accum > 1 else ""
        raise JaxlmError(f"train.batch_size={t.batch_size} does not divide over the {dp}-way "
                         f"data-parallel mesh (mesh.data x mesh.fsdp){accum}")
    if d.seq_len % sharding.context_parallel_size(mesh):
        raise JaxlmError(f"data.seq_len={d.seq_len} does not divide over the "
                         f"{sharding.context_parallel_size(mesh)}-way context axis (mesh.context)")
    platform = jax.devices()[0].platform
    for msg in config_lib.config_warnings(cfg, platform, sharding.tensor_parallel_size(mesh)):
        warn(f"jaxlm: warning: {msg}")
    asm = assemble(cfg, mesh, tokenizer, warn)
    # before anything big is allocated (or written): a state or a step that cannot fit is
    # refused here. The step is compiled for the check only when a step is going to run.
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(asm.abstract.params))
    memory.check_state(asm.abstract, asm.shardings, n_params, platform, warn)
    t0 = time.time()
    if max(checkpoint_steps(workdir / rundir.CHECKPOINTS), default=0) < t.steps:
        memory.check_step(asm.train_step, asm.abstract, asm.shardings,
                          abstract_batch(mesh, cfg.model.objective, t.batch_size, d.seq_len),
                          t.prefetch, warn)
    compile_time = time.time() - t0

    rows = sharding.local_rows(mesh, t.batch_size)
    put = functools.partial(sharding.put_batch, mesh, global_batch=t.batch_size)
    # batches go to the devices t.prefetch steps ahead; checkpoints hold the position of the
    # next batch trained on (of every process's input shard: data.input), so resuming is exact
    shard = data.input_shard(t.batch_size, rows)
    batches = HostPosition(DevicePrefetcher(
        data.train_iterator(tokenizer, t.batch_size, rows, shard), put, t.prefetch),
        d.input, shard)
    ckpt = Checkpointer(workdir / rundir.CHECKPOINTS, keep=t.keep_checkpoints)
    # the newest whole checkpoint (damaged newer ones are reported and moved aside; if all are
    # damaged this raises before anything in the run directory is touched)
    restored = ckpt.restore_latest(asm.abstract, asm.shardings, batches, log=warn)
    if main:  # changes since the checkpoint are said and recorded (config_history.jsonl)
        rundir.write_config(workdir, cfg, tokenizer,
                            restored.step if restored is not None else None, log=warn)
    if restored is not None:
        state, start_step = restored.state, restored.step
        skipped = int(restored.meta.get("skipped_steps", 0))
        log(f"resuming {workdir} from the checkpoint at step {start_step}")
    elif t.branch_from:  # a cooldown branch: the trunk's state and data position at its step
        state, start_step = branch.restore(cfg, asm.abstract, asm.shardings, batches)
        skipped = 0
        log(f"branching {workdir} from {t.branch_from}")
    else:
        if resuming:
            warn(f"jaxlm: no complete checkpoint in {workdir / rundir.CHECKPOINTS}; "
                 f"starting from step 0")
        state, _ = init_state(asm.model, asm.optimizer, seed=t.seed, seq_len=d.seq_len,
                              mesh=mesh)
        if t.init_from:
            state = init_state_from(t.init_from, cfg.model, state, asm.optimizer,
                                    asm.shardings, log)
        start_step, skipped = 0, 0
    # opened once the state is there (a failed init_from leaves no TensorBoard writer behind:
    # its thread, never closed, fails at interpreter exit on Python 3.12)
    writer = metrics_lib.MetricsWriter(workdir, enabled=main)
    writer.truncate_after(start_step, warn)  # step records past the checkpoint are redone next

    _, non_embed = flops.param_counts(state.params)
    peak, peak_source = flops.system_peak(jax.devices(), asm.model_config.dtype, t.peak_flops)
    token_bytes = jax.device_put(tokenizer.token_bytes().astype(np.float32),
                                 sharding.replicated(mesh))
    return OpenRun(cfg, workdir, main, log, warn, show, data, tokenizer, mesh, asm, put, rows,
                token_bytes, batches, ckpt, state, start_step, skipped, writer,
                flops.model_flops_per_token(cfg.model, non_embed, d.seq_len), peak, peak_source,
                compile_time)


def write_header(run: OpenRun, distributed: Optional[str]) -> None:
    """The `start` record of metrics.jsonl and the status line that says what runs where."""
    cfg, m, mesh = run.cfg, run.asm.model_config, run.mesh
    d, t, corpus = cfg.data, cfg.train, run.data.corpus
    total_params, non_embed = flops.param_counts(run.state.params)
    header = {
        "event": "start", "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "platform": jax.devices()[0].platform, "processes": jax.process_count(),
        "distributed": distributed or "single process", "mesh": dict(mesh.shape),
        "rules": sharding.rules_summary(), "family": m.family, "params": total_params,
        "params_non_embedding": non_embed,
        "flops_per_token": flops.flops_per_token(cfg.model, non_embed, d.seq_len),
        "model_flops_per_token": run.model_fpt, "peak_flops": run.peak,
        "peak_flops_source": run.peak_source, "compute_dtype": m.dtype,
        "param_dtype": m.param_dtype, "attention": run.asm.attention or "none (recurrent)",
        "remat": m.remat, "scan_layers": m.scan_layers, "grad_accum": t.grad_accum,
        "batch_size": t.batch_size, "seq_len": d.seq_len, "vocab_size": m.vocab_size,
        "objective": m.objective,
        "corpus": corpus.name, "train_docs": len(corpus.train), "eval_docs": len(corpus.eval),
        "start_step": run.start_step, "prefetch": t.prefetch,
        "data_input": d.input, "input_shards": run.batches.shard.count,
    }
    run.writer.write(header)
    run.log(f"jaxlm: {m.family} with {total_params:,} params ({non_embed:,} non-embedding) on "
            f"{header['devices']} ({header['distributed']}), mesh {dict(mesh.shape)}; "
            f"{m.dtype} compute / {m.param_dtype} params, attention {header['attention']}, "
            f"remat {m.remat}{', scanned layers' if m.scan_layers else ''}"
            f"{f', {t.grad_accum} microbatches' if t.grad_accum > 1 else ''}; "
            f"{corpus.name}: {len(corpus.train)} train / {len(corpus.eval)} eval docs; "
            f"vocab {m.vocab_size}; workdir {run.workdir}")
