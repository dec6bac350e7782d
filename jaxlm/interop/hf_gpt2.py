"""Hugging Face GPT-2 checkpoints (`save_pretrained` folders) <-> jaxlm Transformer params.

A folder holds `config.json` and `model.safetensors` (or `pytorch_model.bin`, or sharded
`*.index.json` variants). Safetensors are read and written with `safetensors.numpy`: no PyTorch.
Only `.bin` files need torch.

The HF tensors per layer i (an optional `transformer.` prefix on all but `lm_head`):

    wte.weight (V, d)           -> wte/embedding          wpe.weight (P, d) -> wpe
    h.i.ln_1.weight / bias      -> h_i/ln_1/norm/scale / bias     (ln_2, ln_f alike)
    h.i.attn.c_attn.weight (d, 3d), bias (3d): Conv1D, (in, out), q|k|v along out
                                -> h_i/attn/{query,key,value}/kernel (d, n, h), bias (n, h)
    h.i.attn.c_proj.weight (d, d) -> h_i/attn/out/kernel (n, h, d)
    h.i.mlp.c_fc.weight (d, f)  -> h_i/mlp/up/kernel      h.i.mlp.c_proj (f, d) -> mlp/down
    lm_head.weight (V, d)       -> lm_head/kernel (d, V) (only when the embeddings are untied)

GPT-2's `gelu_new` is the tanh approximation jaxlm's MLP uses; heads merge n-major, as jaxlm's.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.models.transformer import mlp_width, stack_layers, unstack_layers

CONFIG_JSON = "config.json"
SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # one formula, three names


# ---------------------------------------------------------------------------------------------
# configs


def config_from_hf(hf: dict, source: str = CONFIG_JSON) -> ModelConfig:
    """A jaxlm ModelConfig for an HF GPT-2 config dict; JaxlmError if jaxlm cannot compute it."""
    def bad(msg: str) -> JaxlmError:
        return JaxlmError(f"{source}: {msg}")

    if hf.get("model_type") != "gpt2":
        raise bad(f"only GPT-2 checkpoints (model_type 'gpt2') can be imported; got "
                  f"model_type {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in _TANH_GELUS:
        raise bad(f"activation_function {act!r} is not supported (jaxlm's MLP is the tanh GELU, "
                  f"GPT-2's 'gelu_new')")
    unsupported = {"scale_attn_weights": (False, "unscaled attention"),
                   "scale_attn_by_inverse_layer_idx": (True, "attention scaled by layer index"),
                   "add_cross_attention": (True, "cross-attention")}
    for key, (value, what) in unsupported.items():
        if key in hf and bool(hf[key]) == value:
            raise bad(f"{key}={hf[key]} ({what}) has no jaxlm equivalent")
    try:
        d, n = int(hf["n_embd"]), int(hf["n_head"])
        cfg = ModelConfig(
            family="transformer", vocab_size=int(hf["vocab_size"]), d_model=d,
            n_layers=int(hf["n_layer"]), n_heads=n,
            d_ff=None if hf.get("n_inner") in (None, 4 * d) else int(hf["n_inner"]),
            max_seq_len=int(hf.get("n_positions", hf.get("n_ctx", 1024))), position="learned",
            norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), mlp="gelu",
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), use_bias=True,
            dropout=float(hf.get("resid_pdrop", 0.0)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise bad(f"missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise bad(f"bad value: {e}") from None
    if d % n:
        raise bad(f"n_embd={d} is not divisible by n_head={n}")
    return cfg


def config_to_hf(cfg: ModelConfig, eos_token_id: Optional[int] = None) -> dict:
    """The HF GPT-2 config.json dict for a jaxlm ModelConfig; JaxlmError when the model is not
    a GPT-2 (RoPE, RMSNorm, SwiGLU, GQA, no biases, the LSTM)."""
    problems = []
    if cfg.family != "transformer":
        problems.append(f"model.family={cfg.family}")
    else:
        for key, want in (("position", "learned"), ("norm", "layernorm"), ("mlp", "gelu"),
                          ("use_bias", True)):
            if getattr(cfg, key) != want:
                problems.append(f"model.{key}={getattr(cfg, key)} (GPT-2: {want})")
        if cfg.n_kv_heads not in (None, cfg.n_heads):
            problems.append(f"model.n_kv_heads={cfg.n_kv_heads} (GPT-2 has no grouped-query "
                            "attention)")
        if cfg.mup_base_width not in (None, cfg.d_model):  # at the base width μP is GPT-2
            problems.append(f"model.mup_base_width={cfg.mup_base_width} (μP's logit and "
                            f"attention multipliers at d_model={cfg.d_model}: GPT-2 has none)")
    if problems:
        raise JaxlmError("cannot export as Hugging Face GPT-2: " + "; ".join(problems))
    hf = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "gelu_new", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len, "n_embd": cfg.d_model, "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads, "n_inner": mlp_width(cfg), "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout, "attn_pdrop": 0.0, "initializer_range": cfg.init_std,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "use_cache": True,
        "dtype": "float16" if cfg.param_dtype == "float16" else "float32",
    }
    if eos_token_id is not None:
        hf.update(bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    return hf


# ---------------------------------------------------------------------------------------------
# parameters


def _np(x: Any) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF GPT-2 tensors -> jaxlm params (per-layer `h_i`, or stacked `h` if cfg.scan_layers)."""
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    d, n, L = cfg.d_model, cfg.n_heads, cfg.n_layers
    hd, f, dtype = d // n, mlp_width(cfg), jnp.dtype(cfg.param_dtype)

    def get(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in t:
            raise JaxlmError(f"the checkpoint has no tensor {key!r}")
        x = np.asarray(t[key])
        if x.shape != shape:
            raise JaxlmError(f"tensor {key!r} has shape {x.shape}; config.json implies {shape}")
        return x.astype(dtype)

    def ln(prefix: str) -> dict:
        return {"norm": {"scale": get(f"{prefix}.weight", (d,)), "bias": get(f"{prefix}.bias", (d,))}}

    params: dict[str, Any] = {"wte": {"embedding": get("wte.weight", (cfg.vocab_size, d))},
                              "wpe": get("wpe.weight", (cfg.max_seq_len, d)), "ln_f": ln("ln_f")}
    for i in range(L):
        p = f"h.{i}"
        w_qkv, b_qkv = get(f"{p}.attn.c_attn.weight", (d, 3 * d)), get(f"{p}.attn.c_attn.bias", (3 * d,))
        attn = {name: {"kernel": w_qkv[:, j * d:(j + 1) * d].reshape(d, n, hd),
                       "bias": b_qkv[j * d:(j + 1) * d].reshape(n, hd)}
                for j, name in enumerate(("query", "key", "value"))}
        attn["out"] = {"kernel": get(f"{p}.attn.c_proj.weight", (d, d)).reshape(n, hd, d),
                       "bias": get(f"{p}.attn.c_proj.bias", (d,))}
        params[f"h_{i}"] = {
            "ln_1": ln(f"{p}.ln_1"), "attn": attn, "ln_2": ln(f"{p}.ln_2"),
            "mlp": {"up": {"kernel": get(f"{p}.mlp.c_fc.weight", (d, f)),
                           "bias": get(f"{p}.mlp.c_fc.bias", (f,))},
                    "down": {"kernel": get(f"{p}.mlp.c_proj.weight", (f, d)),
                             "bias": get(f"{p}.mlp.c_proj.bias", (d,))}},
        }
    if not cfg.tie_embeddings:
        params["lm_head"] = {"kernel": get("lm_head.weight", (cfg.vocab_size, d)).T.copy()}
    return stack_layers(params, L) if cfg.scan_layers else params


def params_to_hf(cfg: ModelConfig, params: Any) -> dict[str, np.ndarray]:
    """jaxlm Transformer params (either layout) -> HF GPT2LMHeadModel tensors (numpy)."""
    config_to_hf(cfg)  # raises for models GPT-2 cannot express
    params = jax.tree.map(_np, params)
    if "h" in params:
        params = unstack_layers(params, cfg.n_layers)
    d, n = cfg.d_model, cfg.n_heads
    out = {"transformer.wte.weight": params["wte"]["embedding"],
           "transformer.wpe.weight": params["wpe"]}

    def ln(prefix: str, p: dict) -> None:
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = p["norm"]["scale"], p["norm"]["bias"]

    ln("transformer.ln_f", params["ln_f"])
    for i in range(cfg.n_layers):
        p, h = f"transformer.h.{i}", params[f"h_{i}"]
        a = h["attn"]
        out[f"{p}.attn.c_attn.weight"] = np.concatenate(
            [a[k]["kernel"].reshape(d, d) for k in ("query", "key", "value")], axis=1)
        out[f"{p}.attn.c_attn.bias"] = np.concatenate(
            [a[k]["bias"].reshape(d) for k in ("query", "key", "value")])
        out[f"{p}.attn.c_proj.weight"] = a["out"]["kernel"].reshape(d, d)
        out[f"{p}.attn.c_proj.bias"] = a["out"]["bias"]
        ln(f"{p}.ln_1", h["ln_1"])
        ln(f"{p}.ln_2", h["ln_2"])
        out[f"{p}.mlp.c_fc.weight"] = h["mlp"]["up"]["kernel"]
        out[f"{p}.mlp.c_fc.bias"] = h["mlp"]["up"]["bias"]
        out[f"{p}.mlp.c_proj.weight"] = h["mlp"]["down"]["kernel"]
        out[f"{p}.mlp.c_proj.bias"] = h["mlp"]["down"]["bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = params["lm_head"]["kernel"].T
    # numpy (so safetensors.numpy) has no bfloat16: such params are written as float32
    return {k: np.ascontiguousarray(v if v.dtype in (np.float32, np.float16) else
                                    v.astype(np.float32)) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# files


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, TypeError, ValueError) as e:
        if "bf16" in str(e).lower() or "bfloat16" in str(e).lower():
            return _read_safetensors_bf16(path)
        raise JaxlmError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def _read_safetensors_bf16(path: pathlib.Path) -> dict[str, np.ndarray]:
    """numpy has no bfloat16, so safetensors.numpy cannot read it: parse the (simple) format
    directly, with ml_dtypes' bfloat16 (a JAX dependency)."""
    import ml_dtypes

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": bool}
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = raw[8 + n + start: 8 + n + end]
        out[key] = np.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def read_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
    """A PyTorch-pickled state_dict (`weights_only`) as numpy arrays; needs PyTorch.
    A checkpoint dict holding the weights under "state_dict" is unwrapped."""
    try:
        import torch
    except ImportError:
        raise JaxlmError(f"{path.name} is a PyTorch pickle and reading it needs PyTorch "
                         "(pip install torch), or convert it to .safetensors") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise JaxlmError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JaxlmError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
            for k, v in state.items() if hasattr(v, "detach")}


def read_tensors(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a save_pretrained folder: model.safetensors, pytorch_model.bin, or their
    sharded `.index.json` forms (safetensors preferred)."""
    folder = pathlib.Path(folder)
    for name, reader in ((SAFETENSORS, _read_safetensors), (TORCH_BIN, read_torch_bin)):
        if (folder / name).is_file():
            return reader(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for f in files:
                out.update(reader(folder / f))
            return out
    raise JaxlmError(f"no weights in {folder}: expected {SAFETENSORS} or {TORCH_BIN}")


def read_hf_config(folder: str | pathlib.Path) -> dict:
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise JaxlmError(f"Hugging Face model folder {folder} does not exist")
    path = folder / CONFIG_JSON
    if not path.is_file():
        raise JaxlmError(f"{folder} is not a Hugging Face model folder (no {CONFIG_JSON})")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JaxlmError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(hf, dict):
        raise JaxlmError(f"{path} must hold a JSON object")
    return hf


def load_hf_gpt2(path: str | pathlib.Path, *, scan_layers: bool = False) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a Hugging Face GPT-2 `save_pretrained` folder. Params are
    numpy float32 arrays in jaxlm's per-layer layout (stacked `h` with scan_layers=True)."""
    import dataclasses

    folder = pathlib.Path(path)
    cfg = config_from_hf(read_hf_config(folder), source=str(folder / CONFIG_JSON))
    cfg = dataclasses.replace(cfg, scan_layers=scan_layers)
    return cfg, params_from_hf(read_tensors(folder), cfg)


def save_hf_gpt2(config: ModelConfig, params: Any, path: str | pathlib.Path, *,
                 eos_token_id: Optional[int] = None) -> pathlib.Path:
    """Writes `config.json` + `model.safetensors` that `GPT2LMHeadModel.from_pretrained(path)`
    loads (no PyTorch needed to write them). eos_token_id: the tokenizer's EOS, for HF's
    generate (default: GPT-2's 50256)."""
    return write_hf_folder(path, config_to_hf(config, eos_token_id), params_to_hf(config, params))


def write_hf_folder(path: str | pathlib.Path, hf_config: dict,
                    tensors: dict[str, np.ndarray]) -> pathlib.Path:
    """Writes `config.json` + `model.safetensors` (what save_pretrained writes) into `path`."""
    from safetensors.numpy import save_file

    folder = pathlib.Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_JSON).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(folder / SAFETENSORS), metadata={"format": "pt"})
        # safetensors creates its file 0600; give it the mode every other file here gets (umask)
        (folder / SAFETENSORS).chmod((folder / CONFIG_JSON).stat().st_mode & 0o777)
    except OSError as e:
        raise JaxlmError(f"cannot write {folder}: {e.strerror}") from None
    return folder
