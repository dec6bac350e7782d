"""The run directory: the one owner of its format.

    DIR/config.yaml        the fully resolved run config (what was asked for: `auto`s kept)
    DIR/metrics.jsonl      one JSON record per logged step, plus start/compiled/final events
    DIR/tensorboard/       TensorBoard event files
    DIR/tokenizer.json     the tokenizer (+ tokenizer.model for SentencePiece)
    DIR/samples.txt        the end-of-run samples
    DIR/checkpoints/<step>/   Orbax checkpoints (jaxlm.checkpoint), checkpoints.corrupt/ beside
    DIR/params/            imported weights of a directory made by `jaxlm convert` (no step)
    DIR/.lock              held by the training process writing the directory (`lock`)

Training writes it (`prepare`, `check_resumable`, `write_config`, `write_samples`); generation,
evaluation, export and `train.init_from` read it (`read_config`, `load_run`); `write_run`
makes one from imported weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
import pathlib
import socket
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import yaml

from jaxlm import config as config_lib
from jaxlm.checkpoint import checkpoint_steps, load_params, restore_params, save_params
from jaxlm.config import RunConfig
from jaxlm.data.tokenizers import TOKENIZER_JSON, Tokenizer, load_tokenizer
from jaxlm.errors import JaxlmError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_FILE = "samples.txt"
CHECKPOINTS = "checkpoints"
PARAMS_DIR = "params"  # imported weights of a converted run (no optimizer state, no step)
LOCK_FILE = ".lock"  # held by the process that trains in the directory

# Keys that must not change when resuming: they change what the checkpoint means.
_RESUME_FIXED = ("model", "data.tokenizer", "data.sp_model", "data.sp_vocab_size",
                 "data.sp_model_type", "data.seq_len")
# model keys that change how the same parameters are computed with, not what they mean
_RESUME_FREE = ("vocab_size", "remat", "attention_impl", "dtype")


# -- writing: training ------------------------------------------------------------------------


def prepare(workdir: pathlib.Path) -> None:
    """Creates `workdir` and checks that this process can write in it."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"  # per process: hosts share workdirs
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise JaxlmError(f"workdir {workdir} is not writable: {e.strerror}") from None


@contextlib.contextmanager
def lock(workdir: pathlib.Path, enabled: bool = True) -> Iterator[None]:
    """Holds `workdir` for one training process: a second one is refused with a line naming
    the holder. An flock, which the kernel releases when the process ends however it ends, so
    a killed run never blocks its resume. Multi-host runs lock once (`enabled` on process 0)."""
    if not enabled:
        yield
        return
    path = workdir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise JaxlmError(f"cannot create the lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise JaxlmError(f"run directory {workdir} is in use by another training process "
                         f"({holder}); wait for it to end, or use another --workdir") from None
    try:
        os.ftruncate(fd, 0)
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode())
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def check_resumable(cfg: RunConfig, workdir: pathlib.Path, init_from: Optional[str]) -> bool:
    """Whether training `cfg` in `workdir` resumes a run there (it has a config and checkpoints);
    refuses a config that changes what the checkpoints mean, and a converted directory."""
    ckpt_dir = workdir / CHECKPOINTS
    resuming = (workdir / CONFIG_FILE).exists() and ckpt_dir.exists() and any(ckpt_dir.iterdir())
    if resuming:
        _check_same_meaning(cfg, workdir / CONFIG_FILE)
    elif (workdir / PARAMS_DIR).is_dir() and not init_from:  # made by `jaxlm convert`
        raise JaxlmError(f"{workdir} holds imported weights ({PARAMS_DIR}/): set "
                         f"train.init_from={workdir} to train from them, or use a new --workdir")
    return resuming


def _check_same_meaning(cfg: RunConfig, saved_path: pathlib.Path) -> None:
    saved = yaml.safe_load(saved_path.read_text()) or {}
    new = config_lib.to_dict(cfg)
    for key in _RESUME_FIXED:
        old_v, new_v = _get(saved, key), _get(new, key)
        if key == "model":  # vocab_size is resolved later; how it computes may change
            old_v = {k: v for k, v in old_v.items() if k not in _RESUME_FREE}
            new_v = {k: v for k, v in new_v.items() if k not in _RESUME_FREE}
        if old_v != new_v:
            changed = key
            if isinstance(old_v, dict):
                diff = sorted(k for k in set(old_v) | set(new_v) if old_v.get(k) != new_v.get(k))
                changed = ", ".join(f"{key}.{k}: {old_v.get(k)} -> {new_v.get(k)}" for k in diff)
            else:
                changed = f"{key}: {old_v} -> {new_v}"
            raise JaxlmError(
                f"cannot resume in {saved_path.parent}: its checkpoints were made with a different "
                f"config ({changed}); use a new --workdir"
            )


def write_config(workdir: pathlib.Path, cfg: RunConfig, tokenizer: Tokenizer) -> None:
    """The resolved config and the tokenizer (process 0)."""
    (workdir / CONFIG_FILE).write_text(config_lib.to_yaml(cfg))
    tokenizer.save(workdir)


def write_samples(workdir: pathlib.Path, samples: list[str]) -> None:
    (workdir / SAMPLES_FILE).write_text(
        "".join(f"--- sample {i + 1} ---\n{s}\n" for i, s in enumerate(samples)))


# -- reading: generation, evaluation, export, init_from ----------------------------------------


@dataclasses.dataclass
class Run:
    workdir: pathlib.Path
    config: RunConfig
    params: Any = dataclasses.field(repr=False)
    tokenizer: Optional[Tokenizer]
    step: Optional[int]  # the checkpoint's step; None for a converted run's params/


def read_config(workdir: str | pathlib.Path) -> RunConfig:
    """A run directory's config.yaml (validated, with model.vocab_size resolved)."""
    wd = pathlib.Path(workdir)
    if not wd.exists():
        raise JaxlmError(f"run directory {wd} does not exist")
    if not wd.is_dir():
        raise JaxlmError(f"run directory {wd} is not a directory")
    path = wd / CONFIG_FILE
    if not path.is_file():
        raise JaxlmError(f"{wd} is not a jaxlm run directory (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise JaxlmError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    cfg = config_lib.from_dict(data)
    if cfg.model.vocab_size is None:
        raise JaxlmError(f"{path} has no model.vocab_size")
    return cfg


def has_weights(workdir: str | pathlib.Path) -> bool:
    wd = pathlib.Path(workdir)
    return bool(checkpoint_steps(wd / CHECKPOINTS)) or (wd / PARAMS_DIR).is_dir()


def has_tokenizer(workdir: str | pathlib.Path) -> bool:
    return (pathlib.Path(workdir) / TOKENIZER_JSON).is_file()


def load_run(workdir: str | pathlib.Path, step: Optional[int] = None,
             shardings: Any = None) -> Run:
    """A run directory's config, tokenizer (None if it has none) and params: checkpoint `step`
    (default the newest), else the imported `params/`. Params land on one device unless
    `shardings` (a tree matching them) is given."""
    wd = pathlib.Path(workdir)
    cfg = read_config(wd)
    tokenizer = load_tokenizer(wd) if has_tokenizer(wd) else None
    if checkpoint_steps(wd / CHECKPOINTS):
        params, step = restore_params(wd / CHECKPOINTS, step, shardings)
    elif (wd / PARAMS_DIR).is_dir() and step is None:
        params = load_params(wd / PARAMS_DIR, shardings)
    else:
        raise JaxlmError(f"no checkpoint in {wd}" + (f" for step {step}" if step else "")
                         + f" ({CHECKPOINTS}/ is missing or empty)")
    return Run(wd, cfg, params, tokenizer, step)


def write_run(workdir: str | pathlib.Path, run_config: RunConfig, params: Any,
              tokenizer: Optional[Tokenizer] = None) -> pathlib.Path:
    """A new run directory holding imported weights: config.yaml, the tokenizer, params/.
    Refuses a directory that is not empty (nothing is overwritten)."""
    wd = pathlib.Path(workdir)
    if wd.exists() and (not wd.is_dir() or any(wd.iterdir())):
        raise JaxlmError(f"{wd} already exists and is not empty: convert into a new directory")
    config_lib.validate(run_config)
    try:
        wd.mkdir(parents=True, exist_ok=True)
        (wd / CONFIG_FILE).write_text(config_lib.to_yaml(run_config))
        if tokenizer is not None:
            tokenizer.save(wd)
    except OSError as e:
        raise JaxlmError(f"cannot write {wd}: {e.strerror}") from None
    save_params(wd / PARAMS_DIR, jax.tree.map(jnp.asarray, params))
    return wd


# the name used before the run directory had its own module
read_run_config = read_config

__all__ = ["CONFIG_FILE", "METRICS_FILE", "TENSORBOARD_DIR", "SAMPLES_FILE", "CHECKPOINTS",
           "PARAMS_DIR", "LOCK_FILE", "TOKENIZER_JSON", "Run", "prepare", "lock",
           "check_resumable", "write_config",
           "write_samples", "read_config", "read_run_config", "has_weights", "has_tokenizer",
           "load_run", "write_run"]
