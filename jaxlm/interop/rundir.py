"""jaxlm run directories as a source and a target of weights.

`load_run` reads a run's config, tokenizer and params (its newest checkpoint, or the `params/`
of a directory made by `jaxlm convert`); `write_run` makes such a directory from imported
weights; `load_init_params` serves `train.init_from` (a Hugging Face folder or a run directory),
checking that the weights fit the model being trained.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from jaxlm import config as config_lib
from jaxlm.config import ModelConfig, RunConfig
from jaxlm.data.tokenizers import TOKENIZER_JSON, Tokenizer, load_tokenizer
from jaxlm.errors import JaxlmError
from jaxlm.models.transformer import mlp_width, stack_layers, unstack_layers
from jaxlm.train.checkpoint import checkpoint_steps, load_params, restore_params, save_params

CONFIG_FILE = "config.yaml"  # as jaxlm.train.loop writes it
CHECKPOINTS = "checkpoints"
PARAMS_DIR = "params"  # imported weights of a converted run (no optimizer state, no step)


@dataclasses.dataclass
class Run:
    workdir: pathlib.Path
    config: RunConfig
    params: Any = dataclasses.field(repr=False)
    tokenizer: Optional[Tokenizer]
    step: Optional[int]  # the checkpoint's step; None for a converted run's params/


def read_run_config(workdir: str | pathlib.Path) -> RunConfig:
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


def load_run(workdir: str | pathlib.Path, step: Optional[int] = None,
             shardings: Any = None) -> Run:
    """A run directory's config, tokenizer (None if it has none) and params: checkpoint `step`
    (default the newest), else the imported `params/`. Params land on one device unless
    `shardings` (a tree matching them) is given."""
    wd = pathlib.Path(workdir)
    cfg = read_run_config(wd)
    tokenizer = load_tokenizer(wd) if (wd / TOKENIZER_JSON).is_file() else None
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


# ---------------------------------------------------------------------------------------------
# train.init_from


# Keys that change how parameters are computed with or trained, not what they are.
_FREE_KEYS = ("dtype", "param_dtype", "remat", "attention_impl", "scan_layers", "dropout",
              "init_std", "objective", "causal", "num_labels", "pooling")  # heads: fresh= below


def _meaning(cfg: ModelConfig) -> dict:
    """The keys that fix what the parameters mean, with defaults spelled out."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE_KEYS}
    if cfg.family == "lstm":
        return {k: d[k] for k in ("family", "vocab_size", "d_model", "n_layers", "tie_embeddings")}
    d["n_kv_heads"] = cfg.n_kv_heads or cfg.n_heads
    d["d_ff"] = mlp_width(cfg)
    if cfg.position == "rope":
        d.pop("max_seq_len")  # no position table
    else:
        d.pop("rope_theta")
    return d


def check_same_model(want: ModelConfig, got: ModelConfig, source: str) -> None:
    a, b = _meaning(want), _meaning(got)
    diff = [f"model.{k}={a.get(k)} here but {b.get(k)} there" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
    if diff:
        raise JaxlmError(f"train.init_from={source}: its model does not match this run's "
                         f"({'; '.join(diff)})")


def match_layout(params: Any, cfg: ModelConfig) -> Any:
    """Per-layer <-> stacked (`scan_layers`) Transformer params, as `cfg` wants them."""
    if cfg.family != "transformer":
        return params
    if cfg.scan_layers and "h" not in params:
        return stack_layers(params, cfg.n_layers)
    if not cfg.scan_layers and "h" in params:
        return unstack_layers(params, cfg.n_layers)
    return params


def load_init_params(source: str, cfg: ModelConfig, like: Any = None,
                     fresh: tuple[str, ...] = ()) -> Any:
    """Params for `cfg` from a Hugging Face GPT-2 folder or a jaxlm run directory (host numpy,
    in cfg's layout and param dtype); `like` (e.g. the abstract params) is checked leaf by leaf.

    Fine-tuning with another head: top-level entries of `like` named in `fresh` (e.g. the
    `classifier`) that the source lacks keep `like`'s values; source entries `like` has no place
    for among the heads (`lm_head`, a `classifier`) are dropped."""
    from jaxlm.interop.hf_gpt2 import CONFIG_JSON, load_hf_gpt2

    path = pathlib.Path(source).expanduser()
    if not path.is_dir():
        raise JaxlmError(f"train.init_from={source} does not exist or is not a directory")
    if (path / CONFIG_JSON).is_file():
        got, params = load_hf_gpt2(path)
    elif (path / CONFIG_FILE).is_file():
        run = load_run(path)
        got, params = run.config.model, run.params
    else:
        raise JaxlmError(f"train.init_from={source} is neither a Hugging Face model folder "
                         f"({CONFIG_JSON}) nor a jaxlm run directory ({CONFIG_FILE})")
    check_same_model(cfg, got, source)
    dtype = jnp.dtype(cfg.param_dtype)
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(dtype),
                          match_layout(params, cfg))
    if like is not None and isinstance(params, dict) and isinstance(like, dict):
        params = {k: v for k, v in params.items()
                  if k in like or k not in ("lm_head",) + tuple(fresh)}
        for k in fresh:
            if k in like and k not in params:
                params[k] = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), like[k])
    if like is not None:
        if jax.tree.structure(like) != jax.tree.structure(params):
            raise JaxlmError(f"train.init_from={source}: its parameter tree differs from this "
                             "model's")
        for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(like), jax.tree.leaves(params)):
            if tuple(a.shape) != tuple(b.shape):
                name = jax.tree_util.keystr(key)
                hint = (" (a classifier head for another model.num_labels)"
                        if "classifier" in name else "")
                raise JaxlmError(f"train.init_from={source}: parameter {name} has shape "
                                 f"{b.shape}; this model's is {a.shape}{hint}")
    return params
