"""PyTorch `nn.Embedding -> nn.LSTM(batch_first=True) -> nn.Linear` language models <-> the jaxlm
LSTM (whose weights are torch.nn.LSTM's, transposed: gate order i, f, g, o in both).

    torch state_dict                            jaxlm params
    <emb>.weight (V, e)                         embed/embedding (V, e)
    <lstm>.weight_ih_l{k} (4h, d_in)            lstm_{k}/w_ih (d_in, 4h); d_in = e for k = 0, else h
    <lstm>.weight_hh_l{k} (4h, h)               lstm_{k}/w_hh (h, 4h)
    <lstm>.bias_ih_l{k}, bias_hh_l{k} (4h)      lstm_{k}/b_ih, b_hh (zeros when bias=False)
    <head>.weight (V, h), <head>.bias (V)       head/kernel (h, V), head/bias (zeros if none);
                                                no head tensor: tied to the embedding

The module names are found from the tensors (the LSTM by `weight_ih_l0`; the embedding is the
(V, e) matrix with e = layer 0's input size; of the other (V, h) matrices the one with a bias is
the head) or given explicitly. e != h imports as `model.embed_dim = e` (untied).
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.interop.hf_gpt2 import read_torch_bin


def _to_numpy(state: Any) -> dict[str, np.ndarray]:
    if hasattr(state, "state_dict") and callable(state.state_dict):  # an nn.Module
        state = state.state_dict()
    if isinstance(state, (str, pathlib.Path)):
        state = _read(pathlib.Path(state))
    if not isinstance(state, Mapping):
        raise JaxlmError(f"expected a state_dict (a mapping of tensors); got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if hasattr(v, "detach"):  # torch.Tensor
            v = v.detach().cpu().float().numpy()
        out[str(k)] = np.asarray(v, np.float32)
    return out


def _read(path: pathlib.Path) -> Mapping:
    if not path.is_file():
        raise JaxlmError(f"state_dict file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    return read_torch_bin(path)


def load_torch_lstm(
    state_dict: Union[Mapping, str, pathlib.Path, Any], *, embedding: Optional[str] = None,
    lstm: Optional[str] = None, head: Optional[str] = None, dropout: float = 0.0,
) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) for a PyTorch embedding -> LSTM -> linear LM: a state_dict of
    tensors or arrays, an nn.Module, or a file (torch.save'd state_dict, or .safetensors).
    embedding / lstm / head: the modules' names (prefixes) when auto-detection is ambiguous."""
    t = _to_numpy(state_dict)
    if lstm is None:
        found = sorted(k[: -len("weight_ih_l0")] for k in t if k.endswith("weight_ih_l0"))
        if len(found) != 1:
            raise JaxlmError(f"expected one nn.LSTM in the state_dict (a '*weight_ih_l0' "
                             f"tensor); found {len(found) or 'none'}: pass lstm=NAME")
        lp = found[0]
    else:
        lp = lstm.rstrip(".") + "."
    lstm_keys = [k for k in t if k.startswith(lp)]
    if any("_reverse" in k for k in lstm_keys):
        raise JaxlmError("bidirectional LSTMs cannot be imported (a language model is causal)")
    if any(k.startswith(lp + "weight_hr_l") for k in lstm_keys):
        raise JaxlmError("LSTMs with proj_size cannot be imported")
    layers = sorted({int(m.group(1)) for k in lstm_keys
                     if (m := re.fullmatch(re.escape(lp) + r"weight_ih_l(\d+)", k))})
    if not layers or layers != list(range(len(layers))):
        raise JaxlmError(f"no LSTM layers 'weight_ih_l0', ... under '{lp}'")
    hidden, e = t[f"{lp}weight_hh_l0"].shape[1], t[f"{lp}weight_ih_l0"].shape[1]
    rest = {k: v for k, v in t.items() if not k.startswith(lp)}
    ep, hp = _find_embedding_and_head(rest, e, hidden, embedding, head)
    if ep + "weight" not in rest:
        raise JaxlmError(f"no embedding tensor '{ep}weight'")
    emb = rest[ep + "weight"]
    vocab = emb.shape[0]
    if emb.shape != (vocab, e):
        raise JaxlmError(f"the embedding '{ep}weight' has shape {emb.shape}; the LSTM's input "
                         f"size is {e}")

    params: dict[str, Any] = {"embed": {"embedding": emb}}
    zeros = np.zeros(4 * hidden, np.float32)
    for k in layers:
        for name in ("weight_ih", "weight_hh"):
            want = (4 * hidden, e if (k, name) == (0, "weight_ih") else hidden)
            w = t.get(f"{lp}{name}_l{k}")
            if w is None or w.shape != want:
                raise JaxlmError(f"'{lp}{name}_l{k}' missing or not of shape {want}")
        params[f"lstm_{k}"] = {
            "w_ih": t[f"{lp}weight_ih_l{k}"].T.copy(), "w_hh": t[f"{lp}weight_hh_l{k}"].T.copy(),
            "b_ih": t.get(f"{lp}bias_ih_l{k}", zeros), "b_hh": t.get(f"{lp}bias_hh_l{k}", zeros),
        }
    tied = hp is None
    if not tied:
        w = rest[hp + "weight"]
        if w.shape != (vocab, hidden):
            raise JaxlmError(f"the output layer '{hp}weight' has shape {w.shape}; expected "
                             f"{(vocab, hidden)}")
        params["head"] = {"kernel": w.T.copy(),
                          "bias": rest.get(hp + "bias", np.zeros(vocab, np.float32))}
    if tied and e != hidden:
        raise JaxlmError(f"no output layer of shape {(vocab, hidden)} found, and the embedding "
                         f"(width {e}) cannot serve as one for hidden size {hidden}: pass "
                         "head=NAME")
    cfg = ModelConfig(family="lstm", vocab_size=int(vocab), d_model=int(hidden),
                      embed_dim=None if e == hidden else int(e), n_layers=len(layers),
                      tie_embeddings=tied, dropout=dropout)
    return cfg, params


def _find_embedding_and_head(rest: Mapping[str, np.ndarray], e: int, hidden: int,
                             embedding: Optional[str], head: Optional[str]):
    """(embedding prefix, head prefix or None when tied) among the non-LSTM tensors: the
    embedding is (V, e), the head (V, hidden); a bias marks the head when e == hidden."""
    def mats(width: int) -> list[str]:
        return [k[: -len("weight")] for k, v in rest.items()
                if k.endswith("weight") and v.ndim == 2 and v.shape[1] == width]

    ep = embedding.rstrip(".") + "." if embedding else None
    hp = head.rstrip(".") + "." if head else None
    heads = mats(hidden)
    if hp is None:
        cands = [m for m in heads if m + "bias" in rest and m != ep]
        hp = cands[0] if len(cands) == 1 else None
        if len(cands) > 1:
            raise JaxlmError(f"several candidate output layers {cands}: pass head=NAME")
    if ep is None:
        cands = [m for m in mats(e) if m != hp]
        if len(cands) != 1:
            raise JaxlmError(f"cannot tell the embedding among {cands or 'no matrices'}: "
                             "pass embedding=NAME")
        ep = cands[0]
    if hp is None:  # a head without a bias
        cands = [m for m in heads if m != ep]
        if len(cands) > 1:
            raise JaxlmError(f"several candidate output layers {cands}: pass head=NAME")
        hp = cands[0] if cands else None
    return ep, hp


def lstm_to_torch(config: ModelConfig, params: Any, *, embedding: str = "embedding",
                  lstm: str = "lstm", head: str = "head") -> dict[str, np.ndarray]:
    """The inverse: a state_dict (numpy arrays; `torch.from_numpy` each) for
    Embedding(V, e) -> LSTM(e, h, num_layers, batch_first=True) -> Linear(h, V), e =
    model.embed_dim or d_model, h = d_model."""
    if config.family != "lstm":
        raise JaxlmError(f"lstm_to_torch needs an LSTM model; got model.family={config.family}")
    p = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
    out = {f"{embedding}.weight": p["embed"]["embedding"]}
    for k in range(config.n_layers):
        layer = p[f"lstm_{k}"]
        out[f"{lstm}.weight_ih_l{k}"] = layer["w_ih"].T
        out[f"{lstm}.weight_hh_l{k}"] = layer["w_hh"].T
        out[f"{lstm}.bias_ih_l{k}"] = layer["b_ih"]
        out[f"{lstm}.bias_hh_l{k}"] = layer["b_hh"]
    if config.tie_embeddings:
        out[f"{head}.weight"] = p["embed"]["embedding"]
        out[f"{head}.bias"] = np.zeros(config.vocab_size, np.float32)
    else:
        out[f"{head}.weight"] = p["head"]["kernel"].T
        out[f"{head}.bias"] = p["head"]["bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
