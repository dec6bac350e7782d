"""The run directory: the one owner of its format.

    DIR/config.yaml        the fully resolved run config (what was asked for: `auto`s kept), of
                           the steps since the last resume; written atomically, when changed
    DIR/config_history.jsonl  what earlier steps used: a record (step, time, key, old, new)
                           for each key changed on a resume (see check_resumable for the keys
                           that may not change); absent until one is
    DIR/config.yaml.damaged   a damaged config.yaml kept aside, the config recovered from the
                           newest checkpoint (each checkpoint holds its config)
    DIR/metrics.jsonl      one JSON record per logged step, plus start/compiled/final events
    DIR/tensorboard/       TensorBoard event files
    DIR/jaxlm_tokenizer.json  the tokenizer's type and files: tokenizer.model (SentencePiece);
                           a Hugging Face tokenizer's tokenizer.json, tokenizer_config.json.
                           (older run directories called it tokenizer.json: still read)
    DIR/samples.txt        the end-of-run samples
    DIR/checkpoints/<step>/   Orbax checkpoints (jaxlm.checkpoint), checkpoints.corrupt/ beside
    DIR/params/            imported weights of a directory made by `jaxlm convert` (no step)
    DIR/.lock              held by the training process writing the directory (`lock`)

Training writes it (`prepare`, `check_resumable`, `write_config`, `write_samples`); generation,
evaluation, export and `train.init_from` read it (`read_config`, `load_run`); `write_run`
makes one from imported weights.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import yaml

from jaxlm import config as config_lib
from jaxlm.checkpoint import (checkpoint_config, checkpoint_steps, load_params, restore_params,
                              save_params)
from jaxlm.config import RunConfig
from jaxlm.data.hf_tokenizer import is_hf_tokenizer_json
from jaxlm.data.tokenizers import (LEGACY_TOKENIZER_META, TOKENIZER_JSON, TOKENIZER_META,
                                   Tokenizer, load_tokenizer, tokenizer_meta_path)
from jaxlm.errors import JaxlmError
from jaxlm.rundir_lock import LOCK_FILE, lock, prepare

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_FILE = "samples.txt"
CHECKPOINTS = "checkpoints"
PARAMS_DIR = "params"  # imported weights of a converted run (no optimizer state, no step)

HISTORY_FILE = "config_history.jsonl"  # what earlier steps used: one record per changed key

# Resuming with another value of these is refused: the checkpoints hold parameters of that
# model, or the position in the data stream these keys define (a new corpus must not get the
# old one's position), or that optimizer's state. (group, keys, why)
_RESUME_FIXED = (
    ("model", ("model",), "its checkpoints hold parameters of that model"),
    ("data", ("data.corpus", "data.text_key", "data.train_split", "data.validation_fraction",
              "data.label_key", "data.seed", "data.shuffle_window", "data.seq_len",
              "data.tokenizer", "data.hf_tokenizer", "data.sp_model", "data.sp_vocab_size",
              "data.sp_model_type",
              "data.sp_train_chars", "train.batch_size"),
     "its checkpoints hold the position in the data stream that these keys define"),
    ("optim", ("optim.name", "optim.grad_clip"), "its checkpoints hold that optimizer's state"),
)
# model keys that change how the same parameters are computed with, not what they mean
# (vocab_size: compared only when set, unset means the tokenizer's, resolved later)
_RESUME_FREE = ("vocab_size", "remat", "attention_impl", "dtype")
_NOT_RECORDED = ("distributed.",)  # per launch: where the processes are, not what they compute


def _warn(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, file=sys.stderr)


# -- writing: training ------------------------------------------------------------------------


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d} if prefix else {}
    return {k: v for key, sub in d.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def _normalized(saved: dict) -> dict[str, Any]:
    """A saved config as the flat dict `to_dict` gives (YAML spellings and missing defaults
    evened out); as saved when it no longer validates."""
    try:
        return _flat(config_lib.to_dict(config_lib.from_dict(saved)))
    except JaxlmError:
        return _flat(saved)


def _damage(data: Any, workdir: pathlib.Path) -> Optional[str]:
    """Why a parsed config.yaml cannot be the run's config (None: it can): empty, not a
    mapping, or cut short (a key that the config saved with a checkpoint has is missing)."""
    if data is None:
        return "it is empty"
    if not isinstance(data, dict):
        return "it is not a mapping"
    have = _flat(data)
    want = _flat(config_lib.to_dict(config_lib.RunConfig()))
    if all(k in have for k in want):
        return None
    found = checkpoint_config(workdir / CHECKPOINTS, log=lambda msg: None)
    missing = sorted(k for k in _flat(found[1]) if k not in have) if found else []
    return f"it is cut short (no {missing[0]})" if missing else None


def _parse(workdir: pathlib.Path) -> tuple[Any, Optional[str]]:
    """(config.yaml's content, why it cannot be the run's config or None)."""
    try:
        data = yaml.safe_load((workdir / CONFIG_FILE).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, "it is missing"
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return None, f"it is not valid YAML: {str(e).splitlines()[0]}"
    except OSError as e:
        return None, f"it cannot be read: {e.strerror}"
    return data, _damage(data, workdir)


def saved_config(workdir: pathlib.Path, log: Callable[[str], None] = _warn) -> dict:
    """The run's config as saved: config.yaml, or when that is missing or damaged, the config
    saved with the newest checkpoint that has one (said through `log`)."""
    data, why = _parse(workdir)
    if why is None:
        return data
    path = workdir / CONFIG_FILE
    found = checkpoint_config(workdir / CHECKPOINTS, log)
    if found is None:
        raise JaxlmError(f"{path} cannot be used ({why}) and no checkpoint in "
                         f"{workdir / CHECKPOINTS} holds the run's config to recover it from")
    step, data = found
    log(f"jaxlm: warning: {path} cannot be used ({why}); using the config saved with "
        f"checkpoint {step}")
    return data


def check_resumable(cfg: RunConfig, workdir: pathlib.Path, init_from: Optional[str],
                    log: Callable[[str], None] = _warn) -> bool:
    """Whether training `cfg` in `workdir` resumes a run there (it has checkpoints); refuses a
    config that changes what the checkpoints mean, and a converted directory."""
    resuming = bool(checkpoint_steps(workdir / CHECKPOINTS))
    if resuming:
        _check_same_meaning(cfg, workdir, saved_config(workdir, log))
    elif (workdir / PARAMS_DIR).is_dir() and not init_from:  # made by `jaxlm convert`
        raise JaxlmError(f"{workdir} holds imported weights ({PARAMS_DIR}/): set "
                         f"train.init_from={workdir} to train from them, or use a new --workdir")
    return resuming


def _check_same_meaning(cfg: RunConfig, workdir: pathlib.Path, saved: dict) -> None:
    old, new = _normalized(saved), _flat(config_lib.to_dict(cfg))
    if new.get("model.vocab_size") is None:
        new["model.vocab_size"] = old.get("model.vocab_size")
    free = {f"model.{k}" for k in _RESUME_FREE}
    for group, keys, why in _RESUME_FIXED:
        changed = [k for k in sorted(set(old) | set(new)) if k.startswith(keys)
                   and (k not in free or k == "model.vocab_size")
                   and _differs(k, old.get(k), new.get(k))]
        if not changed:
            continue
        diff = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed)
        back = " ".join(f"{k}={old.get(k)}" for k in changed)
        other = ("use a new --workdir" if group == "model" else
                 f"continue these weights in a new --workdir with train.init_from={workdir}")
        raise JaxlmError(f"cannot resume in {workdir} with a changed config ({diff}): {why}; "
                         f"resume with {back}, or {other}")


def _differs(key: str, old: Any, new: Any) -> bool:
    if key == "optim.grad_clip":  # clipping on or off adds or drops a stage of optimizer state
        return ((old or 0) > 0) != ((new or 0) > 0)
    return old != new


def write_config(workdir: pathlib.Path, cfg: RunConfig, tokenizer: Tokenizer,
                 resumed_step: Optional[int] = None, log: Callable[[str], None] = _warn) -> None:
    """The resolved config and the tokenizer (process 0), each file replaced atomically and
    only when its content changes. Resuming (from `resumed_step`), each changed key is said
    through `log` and appended to config_history.jsonl: config.yaml says what runs now, the
    history what earlier steps used."""
    path = workdir / CONFIG_FILE
    text = config_lib.to_yaml(cfg)
    try:
        if resumed_step is not None:
            _record_changes(workdir, saved_config(workdir, lambda msg: None), cfg,
                            resumed_step, log)
        kept = _keep_damaged(workdir)
        if kept is not None:
            log(f"jaxlm: kept the damaged {path} as {kept}")
        _replace(path, text.encode())
        _save_tokenizer(workdir, tokenizer)
    except OSError as e:
        raise JaxlmError(f"cannot write {path.parent}: {e.strerror}") from None


def _record_changes(workdir: pathlib.Path, saved: dict, cfg: RunConfig, step: int,
                    log: Callable[[str], None]) -> None:
    old, new = _normalized(saved), _flat(config_lib.to_dict(cfg))
    changed = [k for k in new if not k.startswith(_NOT_RECORDED) and old.get(k) != new[k]]
    if not changed:
        return
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = "".join(json.dumps({"step": step, "time": now, "key": k, "old": old.get(k),
                                "new": new[k]}) + "\n" for k in changed)
    with open(workdir / HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(lines)
    for k in changed:
        log(f"jaxlm: {k} changed from {old.get(k)} to {new[k]} at step {step} "
            f"(recorded in {HISTORY_FILE})")


def _keep_damaged(workdir: pathlib.Path) -> Optional[pathlib.Path]:
    """Moves aside a config.yaml that has content but is not a whole config, so that nothing
    written is lost when it is written anew."""
    path = workdir / CONFIG_FILE
    if not path.is_file() or not path.read_bytes().strip() or _parse(workdir)[1] is None:
        return None
    dest, n = path.with_name(path.name + ".damaged"), 1
    while dest.exists():  # an earlier damaged copy stays too
        dest, n = path.with_name(f"{path.name}.damaged.{n}"), n + 1
    os.replace(path, dest)
    return dest


def _replace(path: pathlib.Path, data: bytes) -> bool:
    """Writes `path` atomically (a temporary file beside it, then a rename), and only when its
    content changes: a crash leaves the old file or the new one, never a part."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _save_tokenizer(workdir: pathlib.Path, tokenizer: Tokenizer) -> None:
    """The tokenizer's files, each replaced atomically when it changes (the metadata, which
    names the others, last); an old directory's metadata under the old name goes after."""
    legacy = tokenizer_meta_path(workdir)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".tokenizer.") as tmp:
        tokenizer.save(pathlib.Path(tmp))
        for f in sorted(pathlib.Path(tmp).iterdir(), key=lambda f: f.name == TOKENIZER_META):
            _replace(workdir / f.name, f.read_bytes())
    if (legacy is not None and legacy.name == LEGACY_TOKENIZER_META
            and not is_hf_tokenizer_json(legacy)):
        legacy.unlink()


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
    """A run directory's config (validated, with model.vocab_size resolved): config.yaml, or
    when that is damaged, the one saved with its newest checkpoint (with a warning)."""
    wd = pathlib.Path(workdir)
    if not wd.exists():
        raise JaxlmError(f"run directory {wd} does not exist")
    if not wd.is_dir():
        raise JaxlmError(f"run directory {wd} is not a directory")
    path = wd / CONFIG_FILE
    if not path.is_file() and not checkpoint_steps(wd / CHECKPOINTS):
        raise JaxlmError(f"{wd} is not a jaxlm run directory (no {CONFIG_FILE})")
    cfg = config_lib.from_dict(saved_config(wd))
    if cfg.model.vocab_size is None:
        raise JaxlmError(f"{path} has no model.vocab_size")
    return cfg


def has_weights(workdir: str | pathlib.Path) -> bool:
    wd = pathlib.Path(workdir)
    return bool(checkpoint_steps(wd / CHECKPOINTS)) or (wd / PARAMS_DIR).is_dir()


def has_tokenizer(workdir: str | pathlib.Path) -> bool:
    return tokenizer_meta_path(workdir) is not None


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
           "PARAMS_DIR", "LOCK_FILE", "TOKENIZER_JSON", "TOKENIZER_META", "Run", "prepare",
           "lock",
           "check_resumable", "saved_config", "write_config", "HISTORY_FILE",
           "write_samples", "read_config", "read_run_config", "has_weights", "has_tokenizer",
           "load_run", "write_run"]
