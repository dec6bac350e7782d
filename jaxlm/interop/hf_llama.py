"""Hugging Face Llama-family checkpoints (`LlamaForCausalLM` layout: Llama, Mistral, Qwen2) <->
jaxlm Transformer params (position=rope, norm=rmsnorm, mlp=swiglu, use_bias=false).

The HF tensors per layer i (all under `model.` but `lm_head`); torch Linear weights are
(out, in), jaxlm kernels (in, out):

    embed_tokens.weight (V, d)                  -> wte/embedding
    layers.i.input_layernorm.weight (d,)        -> h_i/ln_1/norm/scale (post_attention_: ln_2)
    layers.i.self_attn.q_proj.weight (n*h, d)   -> h_i/attn/query/kernel (d, n, h)
                      k_proj, v_proj (k*h, d)   -> key, value kernels (d, k, h)
                      o_proj.weight (d, n*h)    -> h_i/attn/out/kernel (n, h, d)
                      q/k/v_proj.bias (Qwen2)   -> query/key/value bias (n or k, h)
    layers.i.mlp.gate_proj, up_proj (f, d)      -> h_i/mlp/gate, up kernels (d, f)
                 down_proj (d, f)               -> h_i/mlp/down/kernel (f, d)
    norm.weight (d,)                            -> ln_f/norm/scale
    lm_head.weight (V, d)                       -> lm_head/kernel (d, V) (untied embeddings)

Conventions that agree without any permutation: HF stores q/k already permuted for its
rotate-half RoPE (the permutation happens in HF's conversion from Meta's interleaved form), and
jaxlm's RoPE is rotate-half with the same frequencies, 1/theta^(2i/h); RMSNorm is
x * rsqrt(mean(x^2) + eps) * weight in both; grouped-query head j serves query heads
[j*g, (j+1)*g) in both (HF's repeat_kv, jax.nn.dot_product_attention's grouping).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.interop.hf_gpt2 import CONFIG_JSON, read_hf_config, read_tensors, write_hf_folder
from jaxlm.models.transformer import mlp_width, stack_layers, unstack_layers

MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
               "qwen2": "Qwen2ForCausalLM"}


# ---------------------------------------------------------------------------------------------
# configs


def _rope_theta(hf: dict, bad) -> float:
    """RoPE base from transformers v5's `rope_parameters` or v4's `rope_theta`/`rope_scaling`;
    scaled RoPE variants (llama3, yarn, linear, dynamic) are refused."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise bad(f"RoPE scaling {kind!r} is not supported (jaxlm's RoPE is unscaled)")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _context(hf: dict, model_type: str) -> int:
    """max_position_embeddings, bounded by a sliding attention window when one is in use: up to
    the window, sliding-window attention is plain causal attention, which jaxlm computes."""
    n = int(hf.get("max_position_embeddings", 2048))
    window = hf.get("sliding_window")
    slides = (window is not None if model_type == "mistral"
              else bool(hf.get("use_sliding_window"))
              or "sliding_attention" in (hf.get("layer_types") or ()))
    return min(n, int(window)) if slides and window else n


def _biases(hf: dict, model_type: str, bad) -> tuple[bool, bool]:
    """(use_bias, qkv_bias): Qwen2 always has q/k/v biases; Llama's attention_bias (q/k/v/o)
    and mlp_bias must agree, as jaxlm's use_bias covers both."""
    if model_type == "qwen2":
        return False, True
    attn, mlp = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attn != mlp:
        raise bad(f"attention_bias={attn} with mlp_bias={mlp} is not supported (jaxlm's "
                  "model.use_bias puts biases on both or neither)")
    return attn, False


def config_from_hf_llama(hf: dict, source: str = CONFIG_JSON) -> ModelConfig:
    """A jaxlm ModelConfig for an HF Llama / Mistral / Qwen2 config dict; JaxlmError naming the
    key when jaxlm cannot compute that model."""
    def bad(msg: str) -> JaxlmError:
        return JaxlmError(f"{source}: {msg}")

    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise bad(f"model_type {model_type!r} is not a Llama-family model "
                  f"({', '.join(MODEL_TYPES)})")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise bad(f"hidden_act {act!r} is not supported (jaxlm's SwiGLU uses 'silu')")
    if int(hf.get("pretraining_tp", 1) or 1) != 1:
        raise bad(f"pretraining_tp={hf['pretraining_tp']} is not supported (only 1)")
    try:
        d, n = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        if d % n:
            raise bad(f"hidden_size={d} is not divisible by num_attention_heads={n}")
        head_dim = hf.get("head_dim")
        if head_dim is not None and int(head_dim) != d // n:
            raise bad(f"head_dim={head_dim} differs from hidden_size/num_attention_heads="
                      f"{d // n}, which jaxlm's attention requires")
        use_bias, qkv_bias = _biases(hf, model_type, bad)
        cfg = ModelConfig(
            family="transformer", vocab_size=int(hf["vocab_size"]), d_model=d,
            n_layers=int(hf["num_hidden_layers"]), n_heads=n,
            n_kv_heads=int(hf.get("num_key_value_heads") or n),
            d_ff=int(hf["intermediate_size"]), max_seq_len=_context(hf, model_type),
            position="rope", rope_theta=_rope_theta(hf, bad), norm="rmsnorm",
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), use_bias=use_bias,
            qkv_bias=qkv_bias, dropout=0.0, init_std=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise bad(f"missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise bad(f"bad value: {e}") from None
    if n % cfg.n_kv_heads:
        raise bad(f"num_attention_heads={n} is not divisible by num_key_value_heads="
                  f"{cfg.n_kv_heads}")
    return cfg


def is_llama_like(cfg: ModelConfig) -> bool:
    """A model the Llama layout expresses: a causal RoPE + RMSNorm + SwiGLU Transformer LM."""
    return (cfg.family == "transformer" and cfg.position == "rope" and cfg.norm == "rmsnorm"
            and cfg.mlp == "swiglu" and cfg.objective == "clm" and cfg.causal is not False)


def config_to_hf_llama(cfg: ModelConfig, eos_token_id: Optional[int] = None) -> dict:
    """The HF config.json dict: LlamaForCausalLM, or Qwen2ForCausalLM for q/k/v-only biases."""
    if not is_llama_like(cfg):
        raise JaxlmError("cannot export as a Hugging Face Llama: it needs model.family="
                         "transformer, position=rope, norm=rmsnorm, mlp=swiglu, objective=clm "
                         f"(this model: {cfg.family}, {cfg.position}, {cfg.norm}, {cfg.mlp}, "
                         f"{cfg.objective})")
    qwen = cfg.qkv_bias and not cfg.use_bias
    model_type = "qwen2" if qwen else "llama"
    hf = {
        "architectures": [MODEL_TYPES[model_type]], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": mlp_width(cfg), "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
        "head_dim": cfg.d_model // cfg.n_heads, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std,
        "attention_dropout": 0.0, "use_cache": True,
        "dtype": "float16" if cfg.param_dtype == "float16" else "float32",
    }
    if qwen:
        hf.update(use_sliding_window=False, sliding_window=None)
    else:
        hf.update(attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias, pretraining_tp=1)
    if eos_token_id is not None:
        hf.update(bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    return hf


# ---------------------------------------------------------------------------------------------
# parameters


def params_from_hf_llama(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF Llama-layout tensors -> jaxlm params (per-layer `h_i`, or stacked `h`)."""
    t = {k.removeprefix("model."): v for k, v in tensors.items()}
    d, n, L, V = cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.vocab_size
    k, h, f = cfg.n_kv_heads or n, d // n, mlp_width(cfg)
    dtype = jnp.dtype(cfg.param_dtype)

    def get(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in t:
            raise JaxlmError(f"the checkpoint has no tensor {key!r}")
        x = np.asarray(t[key])
        if x.shape != shape:
            raise JaxlmError(f"tensor {key!r} has shape {x.shape}; config.json implies {shape}")
        return x.astype(dtype)

    def dense(key: str, out: int, inp: int, bias: bool) -> dict:
        p = {"kernel": get(f"{key}.weight", (out, inp)).T.copy()}
        if bias:
            p["bias"] = get(f"{key}.bias", (out,))
        return p

    def heads(key: str, count: int) -> dict:
        p = dense(key, count * h, d, cfg.use_bias or cfg.qkv_bias)
        p["kernel"] = p["kernel"].reshape(d, count, h)
        if "bias" in p:
            p["bias"] = p["bias"].reshape(count, h)
        return p

    params: dict[str, Any] = {"wte": {"embedding": get("embed_tokens.weight", (V, d))},
                              "ln_f": {"norm": {"scale": get("norm.weight", (d,))}}}
    for i in range(L):
        a, m = f"layers.{i}.self_attn", f"layers.{i}.mlp"
        out = dense(f"{a}.o_proj", d, n * h, cfg.use_bias)
        out["kernel"] = out["kernel"].reshape(n, h, d)
        params[f"h_{i}"] = {
            "ln_1": {"norm": {"scale": get(f"layers.{i}.input_layernorm.weight", (d,))}},
            "attn": {"query": heads(f"{a}.q_proj", n), "key": heads(f"{a}.k_proj", k),
                     "value": heads(f"{a}.v_proj", k), "out": out},
            "ln_2": {"norm": {"scale": get(f"layers.{i}.post_attention_layernorm.weight", (d,))}},
            "mlp": {"gate": dense(f"{m}.gate_proj", f, d, cfg.use_bias),
                    "up": dense(f"{m}.up_proj", f, d, cfg.use_bias),
                    "down": dense(f"{m}.down_proj", d, f, cfg.use_bias)},
        }
    if not cfg.tie_embeddings:
        params["lm_head"] = {"kernel": get("lm_head.weight", (V, d)).T.copy()}
    return stack_layers(params, L) if cfg.scan_layers else params


def params_to_hf_llama(cfg: ModelConfig, params: Any) -> dict[str, np.ndarray]:
    """jaxlm params (either layout) -> HF LlamaForCausalLM / Qwen2ForCausalLM tensors (numpy)."""
    config_to_hf_llama(cfg)  # raises for models the layout cannot express
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), params)
    if "h" in params:
        params = unstack_layers(params, cfg.n_layers)
    out = {"model.embed_tokens.weight": params["wte"]["embedding"],
           "model.norm.weight": params["ln_f"]["norm"]["scale"]}

    def dense(key: str, p: dict) -> None:
        w = p["kernel"]  # (d, n, h), (n, h, d) for o_proj, or (in, out): to torch's (out, in)
        if key.endswith("o_proj"):
            out[f"{key}.weight"] = w.reshape(-1, w.shape[-1]).T
        else:
            out[f"{key}.weight"] = w.reshape(w.shape[0], -1).T
        if "bias" in p:
            out[f"{key}.bias"] = p["bias"].reshape(-1)

    for i in range(cfg.n_layers):
        p, a, m = params[f"h_{i}"], f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        out[f"model.layers.{i}.input_layernorm.weight"] = p["ln_1"]["norm"]["scale"]
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = p["ln_2"]["norm"]["scale"]
        for name, hf_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"),
                              ("out", "o_proj")):
            dense(f"{a}.{hf_name}", p["attn"][name])
        for name in ("gate", "up", "down"):
            dense(f"{m}.{name}_proj", p["mlp"][name])
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = params["lm_head"]["kernel"].T
    # numpy (so safetensors.numpy) has no bfloat16: such params are written as float32
    return {k: np.ascontiguousarray(v if v.dtype in (np.float32, np.float16) else
                                    v.astype(np.float32)) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# folders


def load_hf_llama(path: str | pathlib.Path, *,
                  scan_layers: bool = False) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a Llama / Mistral / Qwen2 `save_pretrained` folder
    (model.safetensors, sharded model.safetensors.index.json, or pytorch_model.bin)."""
    folder = pathlib.Path(path)
    cfg = config_from_hf_llama(read_hf_config(folder), source=str(folder / CONFIG_JSON))
    cfg = dataclasses.replace(cfg, scan_layers=scan_layers)
    return cfg, params_from_hf_llama(read_tensors(folder), cfg)


def save_hf_llama(config: ModelConfig, params: Any, path: str | pathlib.Path, *,
                  eos_token_id: Optional[int] = None) -> pathlib.Path:
    """Writes `config.json` + `model.safetensors` that `AutoModelForCausalLM.from_pretrained`
    loads as LlamaForCausalLM (Qwen2ForCausalLM for a model with q/k/v-only biases)."""
    return write_hf_folder(path, config_to_hf_llama(config, eos_token_id),
                           params_to_hf_llama(config, params))
