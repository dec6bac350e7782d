"""Whole conversions, what `jaxlm convert` runs: a Hugging Face GPT-2 or Llama-family folder
(with its tokenizer) or a PyTorch LSTM state_dict -> a new jaxlm run directory (config.yaml,
params/, a tokenizer when one applies), and a run directory -> a Hugging Face GPT-2 or Llama
folder (with its tokenizer). Targets must be new or empty directories."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Optional

from jaxlm.config import ModelConfig, RunConfig, replace
from jaxlm.data.hf_tokenizer import HFTokenizer, has_hf_tokenizer, load_for_model
from jaxlm.data.tokenizers import Tokenizer
from jaxlm.data.word_vocab import VOCAB_HINT, WordTokenizer
from jaxlm.errors import JaxlmError
from jaxlm.interop.hf import load_hf, save_hf
from jaxlm.interop.lstm_torch import load_torch_lstm
from jaxlm.rundir import load_run, write_run  # the one place this module names rundir



@dataclasses.dataclass
class Converted:
    path: pathlib.Path  # what was written
    model: ModelConfig
    tokenizer: Optional[Tokenizer] = None  # a new run directory's tokenizer (None: none)
    step: Optional[int] = None  # run -> HF: the checkpoint's step (None: imported params/)


def require_empty(path: str | pathlib.Path) -> None:
    """Refuses a target that exists and is not an empty directory (nothing is overwritten)."""
    p = pathlib.Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise JaxlmError(f"{p} already exists and is not empty: choose a new directory")


def run_to_hf(workdir: str | pathlib.Path, hf_dir: str | pathlib.Path,
              step: Optional[int] = None) -> Converted:
    """A run directory's newest checkpoint (or `step`, or its imported params/) -> a folder with
    config.json + model.safetensors that transformers.AutoModelForCausalLM.from_pretrained loads
    (GPT2LMHeadModel, or LlamaForCausalLM / Qwen2ForCausalLM for RoPE + RMSNorm + SwiGLU), and a
    Hugging Face tokenizer's files (which AutoTokenizer loads) when the run has one."""
    require_empty(hf_dir)
    run = load_run(workdir, step=step)
    eos = run.tokenizer.eos_id if run.tokenizer is not None else None
    path = save_hf(run.config.model, run.params, hf_dir, eos_token_id=eos)
    if isinstance(run.tokenizer, HFTokenizer):
        run.tokenizer.save_pretrained(path)
    return Converted(path, run.config.model, run.tokenizer, run.step)


def hf_folder_tokenizer(hf_dir: str | pathlib.Path, vocab_size: int,
                        tokenizer: Optional[str | pathlib.Path] = None) -> Optional[HFTokenizer]:
    """The tokenizer of a model with `vocab_size` embeddings from Hugging Face folder `hf_dir`:
    the one in `tokenizer` (a folder) if given, else the folder's own; None when there is none.
    One that cannot belong to the model is refused."""
    where = tokenizer if tokenizer is not None else hf_dir
    if tokenizer is not None and not has_hf_tokenizer(tokenizer):
        raise JaxlmError(f"--tokenizer {tokenizer} holds no Hugging Face tokenizer "
                         "(tokenizer.json, or vocab.json + merges.txt)")
    return load_for_model(where, vocab_size, hf_dir)


def hf_to_run(hf_dir: str | pathlib.Path, workdir: str | pathlib.Path, *,
              scan_layers: bool = False, tokenizer: Optional[str | pathlib.Path] = None,
              note: Callable[[str], None] = lambda msg: None) -> Converted:
    """A Hugging Face GPT-2 / Llama / Mistral / Qwen2 save_pretrained folder -> a new run
    directory with the folder's tokenizer (or the one in the folder `tokenizer`). Layers are
    stored stacked with scan_layers=True. A weights-only folder gets no tokenizer (said through
    `note`, with how to give one), never the byte tokenizer: the model's ids would mean other
    text."""
    require_empty(workdir)
    model_cfg, params = load_hf(hf_dir, scan_layers=scan_layers)
    tok = hf_folder_tokenizer(hf_dir, model_cfg.vocab_size, tokenizer)
    if tok is None:
        note(f"{hf_dir} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): the run "
             "directory gets none, so it cannot generate text or be fine-tuned on text; convert "
             "again with --tokenizer DIR (the folder of the model's tokenizer)")
    return _write(workdir, model_cfg, params, tokenizer=tok)


def torch_lstm_to_run(state_dict: str | pathlib.Path, workdir: str | pathlib.Path,
                      vocab: Optional[str | pathlib.Path] = None,
                      note: Callable[[str], None] = lambda msg: None) -> Converted:
    """A torch.save'd state_dict of Embedding -> LSTM -> Linear -> a new run directory, with the
    word-level tokenizer of `vocab` (a file: one token per line, or a JSON token -> id map; its
    size must be the model's vocabulary). Without one the run directory gets no tokenizer (said
    through `note`): the model's ids mean nothing to the byte tokenizer."""
    require_empty(workdir)
    tokenizer = WordTokenizer.load(vocab) if vocab is not None else None
    model_cfg, params = load_torch_lstm(state_dict)
    if tokenizer is None:
        note(f"{state_dict} carries no vocabulary, so the run directory gets no tokenizer and "
             f"`jaxlm generate` cannot use it: pass --vocab FILE, {VOCAB_HINT}")
    elif tokenizer.vocab_size != model_cfg.vocab_size:
        raise JaxlmError(f"vocabulary {vocab} holds {tokenizer.vocab_size} tokens but the model's "
                         f"embedding has {model_cfg.vocab_size} rows: pass the vocabulary the "
                         "model was trained with")
    return _write(workdir, model_cfg, params, tokenizer=tokenizer)


def _write(workdir: str | pathlib.Path, model_cfg: ModelConfig, params,
           tokenizer: Optional[Tokenizer]) -> Converted:
    run_cfg = RunConfig(model=model_cfg)
    run_cfg = replace(run_cfg, **{"data.seq_len": min(run_cfg.data.seq_len, model_cfg.max_seq_len)})
    if isinstance(tokenizer, HFTokenizer):  # the run directory holds its files
        run_cfg = replace(run_cfg, **{"data.tokenizer": "hf",
                                      "data.hf_tokenizer": str(pathlib.Path(workdir).resolve())})
    path = write_run(workdir, run_cfg, params, tokenizer)
    return Converted(path, model_cfg, tokenizer)
