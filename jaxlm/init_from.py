"""`train.init_from`: the starting weights of a fine-tuning run, from a Hugging Face GPT-2 or
Llama-family folder or a jaxlm run directory, checked against the model being trained."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.interop.hf import load_hf
from jaxlm.interop.hf_gpt2 import CONFIG_JSON
from jaxlm.models.transformer import mlp_width, stack_layers, unstack_layers
from jaxlm.rundir import CONFIG_FILE, load_run

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
    path = pathlib.Path(source).expanduser()
    if not path.is_dir():
        raise JaxlmError(f"train.init_from={source} does not exist or is not a directory")
    if (path / CONFIG_JSON).is_file():
        got, params = load_hf(path)
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


def init_state_from(source: str, model_cfg: ModelConfig, state: Any, optimizer: Any,
                    shardings: Any, log: Callable[[str], None]) -> Any:
    """Fine-tuning: the fresh `state` with params imported from `source` (checked against the
    model, placed with the state's shardings) and an optimizer state initialized from them.
    A `classifier` head the source lacks keeps its fresh initialization."""
    params = jax.device_put(load_init_params(source, model_cfg, like=state.params,
                                             fresh=("classifier",)), shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    log(f"initialized the parameters from {source}")
    return state.replace(params=params, opt_state=opt_state)
