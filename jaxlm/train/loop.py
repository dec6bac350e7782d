"""The training loop: the side-effect edge around the pure, jitted steps.

`train` reads in one sitting: open the run (run directory, data, tokenizer, mesh, the assembly
shared with evaluation, the newest checkpoint or a fresh state) -> the step loop -> finish
(final eval, samples). The loop dispatches step t before fetching step t-1's metrics and
fetches metrics only at log steps (no host sync per step); its state between steps is one small
dataclass, `_Progress`.

Faults: the newest whole checkpoint is found before anything in the run directory is written
(damaged ones are reported and moved aside by the Checkpointer); SIGTERM/SIGINT checkpoint the
step reached and stop (`RunResult.preempted`); a step with a non-finite loss or gradient norm
leaves the state as it was (inside the jitted step) and is counted, or halts the run
(`train.nonfinite=halt`, NonFiniteError); `train.nonfinite_patience` consecutive skipped steps
halt it too.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxlm import config as config_lib
from jaxlm import flops, rundir, sharding, xla_flags
from jaxlm.checkpoint.reasons import quiet_orbax
from jaxlm.config import RunConfig
from jaxlm.errors import NonFiniteError
from jaxlm.evaluate import evaluate, with_coverage
from jaxlm.generate import run_samples
from jaxlm.train import metrics as metrics_lib
from jaxlm.train.checkpoint_clock import CheckpointClock
from jaxlm.train.preemption import Preempted, StopSignals
from jaxlm.train.start import OpenRun, open_run, write_header

# the run directory's file names, where callers found them before jaxlm.rundir existed
CONFIG_FILE, SAMPLES_FILE = rundir.CONFIG_FILE, rundir.SAMPLES_FILE


@dataclasses.dataclass
class RunResult:
    workdir: pathlib.Path
    config: RunConfig
    final_step: int
    eval: dict[str, float]
    samples: list[str]
    wall_time: float
    tokens_per_sec: float
    params: Any = dataclasses.field(repr=False, default=None)
    preempted: bool = False  # stopped by SIGTERM/SIGINT after checkpointing: re-run to resume
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient norm
    mfu: float = 0.0  # model FLOPs utilization at the last log step (see jaxlm.flops)
    peak_flops: float = 0.0  # the FLOP/s MFU is measured against
    peak_flops_source: str = ""  # where that number comes from (data sheet, measured roof)
    start_step: int = 0  # the step this call started from (== final_step: nothing to train)


@dataclasses.dataclass
class _Progress:
    """The loop's state between steps."""
    skipped: int
    last_saved: Optional[int]
    last_log: tuple[float, int]  # (time, step) of the last throughput measurement
    streak: int = 0  # consecutive skipped updates, up to the last step whose flag was fetched
    rate: float = 0.0  # tokens/s over the last log interval
    last_eval: tuple[int, Optional[float]] = (-1, None)  # (step, periodic eval loss there)
    nonfinite: list = dataclasses.field(default_factory=list)  # (step, device flag) unfetched
    pending: Optional[tuple[int, Any, bool]] = None  # (step, metrics, eval?) to flush


def train(cfg: RunConfig, workdir: str | os.PathLike, *, quiet: bool = False,
          on_log: Optional[Callable[[dict], None]] = None) -> RunResult:
    """Trains (or resumes) the run in `workdir` to `cfg.train.steps`; evaluates and samples.

    `on_log(record)` (process 0 only) gets each logged record as it is written to metrics.jsonl:
    step records (loss, learning_rate, tokens_per_sec, mfu, eval_* at eval steps) and the
    final one (`event: final`), e.g. to draw a live loss curve in a notebook."""
    t_start = time.time()
    # the run's XLA flags (CPU: one device per core for a Transformer), if JAX has not started
    xla_flags.apply_before_backends(training=cfg.model.family == "transformer")
    with quiet_orbax():  # Orbax's noise off the terminal during the run, not after it
        distributed = sharding.initialize_distributed(cfg.distributed)  # before any device
        workdir = pathlib.Path(workdir)
        rundir.prepare(workdir)
        # refused before the lock (it writes nothing): a config that changes what the
        # checkpoints mean gets its own message even while another process trains there
        resuming = rundir.check_resumable(cfg, workdir, cfg.train.init_from)
        with rundir.lock(workdir, enabled=jax.process_index() == 0):  # one writer at a time
            return _train(cfg, workdir, resuming, quiet, on_log, distributed, t_start)


def _train(cfg: RunConfig, workdir: pathlib.Path, resuming: bool, quiet: bool,
           on_log: Optional[Callable[[dict], None]], distributed: Optional[str],
           t_start: float) -> RunResult:
    run = open_run(cfg, workdir, resuming, quiet)
    write_header(run, distributed)
    loop = _Loop(run, on_log if run.main else None)
    try:
        stopped, final_step = loop.steps()
        if stopped:
            return loop.preempted(stopped, final_step, t_start)
        try:  # the checkpoint is committed: a signal now stops at once, as a preemption
            with StopSignals(immediate=True):
                return loop.finish(final_step, t_start)
        except Preempted as e:
            return loop.preempted(e.signal_name, final_step, t_start,
                                  during=" during the final eval and samples")
    except Exception:
        try:  # let a save in flight commit; the error being raised is the one to report
            run.ckpt.close()
        except Exception:  # noqa: BLE001
            pass
        raise
    finally:
        loop.bar.close()
        run.writer.close()


class _Loop:
    """The step loop and the end of a run, over one `_Run` and its `_Progress`."""

    def __init__(self, run: OpenRun, on_log: Optional[Callable[[dict], None]]):
        self.run, self.on_log, self.t = run, on_log, run.cfg.train
        self.state = run.state
        self.p = _Progress(skipped=run.skipped, last_saved=run.start_step or None,
                           last_log=(time.time(), run.start_step))
        self.tokens_per_step = self.t.batch_size * run.cfg.data.seq_len
        self.config_dict = config_lib.to_dict(run.cfg)
        self.bar = metrics_lib.progress(self.t.steps, initial=run.start_step, enabled=run.show)
        self.stop = StopSignals(log=run.warn)
        self.clock = CheckpointClock(self.t.checkpoint_every_minutes)

    # -- the steps ------------------------------------------------------------------------------

    def steps(self) -> tuple[Optional[str], int]:
        """Runs steps start+1..train.steps (or until a stop signal); checkpoints the last one.
        Returns (the signal that stopped training or None, the final step)."""
        run, t, p = self.run, self.t, self.p
        stopped = None
        with self.stop:  # SIGTERM/SIGINT: finish the step, checkpoint it, stop
            for step in range(run.start_step + 1, t.steps + 1):
                batch = next(run.batches)
                if step == run.start_step + 1:
                    metrics = self._first_step(step, batch)
                else:
                    self.state, metrics = run.asm.train_step(self.state, batch)
                p.nonfinite.append((step, metrics["nonfinite"]))
                if t.nonfinite == "halt":  # step t is dispatched: check step t-1
                    self._drain(step - 1)
                if p.pending is not None:  # step t is dispatched; now fetch step t-1's metrics
                    self._flush(*p.pending)
                    p.pending = None
                do_eval = bool(t.eval_every) and step % t.eval_every == 0 and step != t.steps
                if step % t.log_every == 0 or do_eval or step == t.steps:
                    p.pending = (step, metrics, do_eval)
                if do_eval:  # eval must see this step's params: flush now
                    self._flush(*p.pending)
                    p.pending = None
                if ((t.checkpoint_every and step % t.checkpoint_every == 0)
                        or step in t.checkpoint_at) and step != t.steps:
                    self._save(step)
                self.bar.update(1)
                stop, save_due = self._agree(step)
                if save_due and p.last_saved != step and step != t.steps:
                    self._save(step)  # train.checkpoint_every_minutes
                if stop:
                    stopped = self.stop.requested or "a signal to another process"
                    break
            if p.pending is not None:
                self._flush(*p.pending)
            final_step = int(jax.device_get(self.state.step))
            self._drain(final_step)
            if p.last_saved != final_step:
                self._save(final_step)
            run.ckpt.wait()  # committed: a signal from here on loses nothing
        self.bar.close()
        if stopped is None and self.stop.requested and jax.process_count() == 1:
            stopped = self.stop.requested  # arrived after the last step: stop before evaluating
        return stopped, final_step

    def _first_step(self, step: int, batch: dict) -> Any:
        """The first step, timed with its compile."""
        run = self.run
        t0 = time.time()
        self.state, metrics = run.asm.train_step(self.state, batch)
        jax.block_until_ready(metrics)
        compile_time = time.time() - t0 + run.compile_time
        run.writer.write({"event": "compiled", "step": step, "compile_time_sec": compile_time})
        run.log(f"compiled the train step in {compile_time:.1f} s (with its first step); "
                f"MFU against {run.peak / 1e12:.3g} TFLOP/s ({run.peak_source})")
        self.p.last_log = (time.time(), step)
        return metrics

    def _drain(self, upto: int) -> None:
        """Fetches the non-finite flags of steps <= upto: counts skipped updates, or halts (halt
        mode, or train.nonfinite_patience consecutive skips)."""
        p, t = self.p, self.t
        ready = [(s, f) for s, f in p.nonfinite if s <= upto]
        if not ready:
            return
        del p.nonfinite[:len(ready)]
        for (s, _), f in zip(ready, jax.device_get([f for _, f in ready])):
            if not int(f):
                p.streak = 0
                continue
            p.skipped += 1
            p.streak += 1
            if t.nonfinite == "halt":
                self._halt(s, f"non-finite loss or gradient norm at step {s}; halting "
                              f"(train.nonfinite=halt)",
                           "train.nonfinite=skip skips such updates instead")
            self.run.warn(f"jaxlm: warning: non-finite loss or gradient norm at step {s}; "
                          f"update skipped ({p.skipped} skipped so far)")
            if t.nonfinite_patience and p.streak >= t.nonfinite_patience:
                self._halt(s, f"non-finite loss or gradient norm at {p.streak} consecutive steps "
                              f"({s - p.streak + 1}-{s}), every update skipped; stopping "
                              f"(train.nonfinite_patience={t.nonfinite_patience})",
                           "its weights are from before these steps. Lower optim.lr or check "
                           "the data; train.nonfinite_patience=0 never stops")

    def _halt(self, step: int, what: str, advice: str) -> None:
        self.run.writer.write({"event": "halted", "step": step, "skipped_steps": self.p.skipped})
        last = self.p.last_saved
        newest = self.run.ckpt.step_path(last) if last else "none"
        raise NonFiniteError(f"{what}. Newest checkpoint: {newest}; {advice}")

    def _save(self, step: int) -> None:
        p = self.p
        self._drain(step)  # halts first in halt mode; the counter saved is exact
        self.run.ckpt.save(step, self.state, self.run.batches, meta={"skipped_steps": p.skipped},
                           config=self.config_dict,
                           eval_loss=p.last_eval[1] if p.last_eval[0] == step else None)
        p.last_saved = step
        self.clock.saved()

    def _eval(self, max_batches: int) -> dict[str, float]:
        run = self.run
        bar = (metrics_lib.progress(max_batches or None, desc="eval", unit="batch", leave=False)
               if run.show else None)  # max_batches 0: the whole split, no ETA
        batches = run.data.eval_batches(run.tokenizer, self.t.batch_size, max_batches, run.rows)
        return with_coverage(evaluate(run.asm.eval_step, self.state.params, batches,
                                      run.token_bytes, run.put, bar=bar), max_batches)

    def _flush(self, step: int, metrics: Any, do_eval: bool) -> None:
        """Fetches step `step`'s metrics, measures throughput, evaluates if due, logs."""
        p, run = self.p, self.run
        self._drain(step)
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        step_time = max(now - p.last_log[0], 1e-9) / max(step - p.last_log[1], 1)
        p.rate = self.tokens_per_step / step_time
        p.last_log = (now, step)
        record = {"step": step, "loss": m["loss"], "learning_rate": m["learning_rate"],
                  "grad_norm": m["grad_norm"], "tokens_per_sec": p.rate,
                  "step_time_sec": step_time, "mfu": flops.mfu(p.rate, run.model_fpt, run.peak),
                  "tokens_seen": step * self.tokens_per_step, "skipped_steps": p.skipped}
        record.update({k: v for k, v in m.items() if k.startswith("update_ratio/")})
        if do_eval:
            record.update(self._eval(self.t.eval_batches))
            p.last_log = (time.time(), step)  # eval time is not training throughput
            p.last_eval = (step, record["eval_loss"])
        self._record(record)
        post = {"loss": f"{m['loss']:.3f}", "tok/s": f"{p.rate:,.0f}",
                "mfu": f"{100 * record['mfu']:.1f}%"}
        if do_eval:
            objective = run.cfg.model.objective
            key = "eval_bpb" if "eval_bpb" in record and objective == "clm" else "eval_accuracy"
            post[key] = f"{record[key]:.3f}"
        self.bar.set_postfix(post, refresh=False)

    def _record(self, record: dict) -> None:
        self.run.writer.write(record)
        if self.on_log is not None:
            self.on_log(record)

    def _agree(self, step: int) -> tuple[bool, bool]:
        """(stop after `step`, checkpoint it for train.checkpoint_every_minutes). Processes of a
        multi-host run must stop and save at the same steps, so they agree at log steps (one
        tiny all-gather): any process's signal stops all; process 0's clock decides the save."""
        requested = self.stop.requested is not None
        sync_point = step % self.t.log_every == 0 or step == self.t.steps
        if jax.process_count() == 1:
            return requested, sync_point and self.clock.due()
        if not sync_point:
            return False, False
        flags = np.asarray(multihost_utils.process_allgather(
            np.asarray([requested, self.clock.due()], np.int32))).reshape(-1, 2)
        return bool(np.any(flags[:, 0])), bool(flags[0, 1])

    # -- the end --------------------------------------------------------------------------------

    def preempted(self, stopped: str, final_step: int, t_start: float,
                  during: str = "") -> RunResult:
        run, p = self.run, self.p
        run.ckpt.close()
        run.writer.write({"event": "preempted", "step": final_step, "signal": stopped,
                          "skipped_steps": p.skipped})
        run.warn(f"jaxlm: stopped by {stopped}{during} at step {final_step} of {self.t.steps}; "
                 f"checkpoint {run.ckpt.step_path(final_step)} is saved. To resume, run the "
                 f"same command again (or jaxlm.train with the same config and workdir)")
        return RunResult(run.workdir, run.cfg, final_step, {}, [], time.time() - t_start, p.rate,
                         self.state.params, preempted=True, skipped_steps=p.skipped)

    def finish(self, final_step: int, t_start: float) -> RunResult:
        """The final eval (metrics.jsonl's `final` record) and the samples."""
        run, p, t = self.run, self.p, self.t
        run.log(f"evaluating at step {final_step} on {t.final_eval_batches or 'all'} eval "
                f"batches of {t.batch_size}x{run.cfg.data.seq_len} tokens")
        final_eval = self._eval(t.final_eval_batches)
        mfu = flops.mfu(p.rate, run.model_fpt, run.peak)
        # a run already finished trains no step: no throughput to report
        speed = ({"tokens_per_sec": p.rate, "mfu": mfu, "peak_flops": run.peak,
                  "peak_flops_source": run.peak_source} if final_step > run.start_step else {})
        self._record({"event": "final", "step": final_step, **final_eval,
                      "steps_run": final_step - run.start_step, **speed,
                      "skipped_steps": p.skipped, "wall_time_sec": time.time() - t_start})
        samples = []
        if run.cfg.model.objective == "clm":
            samples = run_samples(run.asm.model, self.state.params, run.tokenizer,
                                  prompt=t.sample_prompt, n=t.samples, tokens=t.sample_tokens,
                                  temperature=t.sample_temperature, seed=t.seed)
        if run.main:
            rundir.write_samples(run.workdir, samples)
        run.ckpt.close()
        return RunResult(run.workdir, run.cfg, final_step, final_eval, samples,
                         time.time() - t_start, p.rate, self.state.params,
                         skipped_steps=p.skipped, mfu=mfu, peak_flops=run.peak,
                         peak_flops_source=run.peak_source, start_step=run.start_step)
