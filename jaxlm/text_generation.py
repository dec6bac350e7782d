"""`TextGenerator`: text in, records out, like Hugging Face's `pipeline("text-generation")`, from
a jaxlm run directory or a Hugging Face GPT-2 folder with its tokenizer.

    gen = TextGenerator.from_pretrained("runs/quickstart")          # or an HF folder
    gen("def ", max_length=50)                  # -> [{"generated_text": "def ..."}]
    gen(["import ", "class "], num_return_sequences=2)   # -> [[rec, rec], [rec, rec]]
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional, Sequence, Union

from jaxlm.data.hf_tokenizer import load_for_model
from jaxlm.errors import JaxlmError
from jaxlm.generate import DEFAULT_MAX_NEW_TOKENS, check_generative, generate
from jaxlm.interop.hf import load_hf
from jaxlm.interop.hf_gpt2 import CONFIG_JSON
from jaxlm.models import build_model
from jaxlm.rundir import load_run

Record = dict[str, str]


def _first_stop(tokenizer: Any, new: list[int], stops: Sequence[str]) -> int:
    """The fewest of the `new` tokens whose text holds a stop string (all when none does):
    decoded text only grows with more tokens, so a binary search finds it."""
    def hit(n: int) -> bool:
        text = tokenizer.decode(new[:n])
        return any(s in text for s in stops)

    if not stops or not hit(len(new)):
        return len(new)
    lo, hi = 1, len(new)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hit(mid) else (mid + 1, hi)
    return lo


class TextGenerator:
    """A model, its params and tokenizer; called like a text-generation pipeline.

    An empty prompt starts from the EOS token (the document separator). Texts include the
    prompt unless return_full_text=False (the prompt as given, then the new text)."""

    def __init__(self, model_config: Any, params: Any, tokenizer: Any):
        self.config = model_config
        self.model = build_model(model_config)
        self.params = params
        self.tokenizer = tokenizer

    @classmethod
    def from_workdir(cls, workdir: str | pathlib.Path,
                     step: Optional[int] = None) -> "TextGenerator":
        """A run directory's newest checkpoint (or `step`, or its imported params/)."""
        run = load_run(workdir, step=step)
        check_generative(run.config.model)
        if run.tokenizer is None:
            raise JaxlmError(f"{workdir} has no tokenizer (jaxlm_tokenizer.json): it can only be "
                             "sampled from token ids (jaxlm.generate.generate), or convert its "
                             "weights again with `jaxlm convert --from-hf DIR --tokenizer DIR`")
        return cls(run.config.model, run.params, run.tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, step: Optional[int] = None,
                        tokenizer: Optional[str | pathlib.Path] = None) -> "TextGenerator":
        """A Hugging Face GPT-2 or Llama-family folder (config.json) with its tokenizer, or the
        one in the folder `tokenizer`; else a jaxlm run directory (`from_workdir`)."""
        folder = pathlib.Path(path).expanduser()
        if not (folder / CONFIG_JSON).is_file():
            return cls.from_workdir(folder, step=step)
        model_cfg, params = load_hf(folder)
        where = pathlib.Path(tokenizer).expanduser() if tokenizer is not None else folder
        tok = load_for_model(where, model_cfg.vocab_size, path)
        if tok is None:
            raise JaxlmError(f"{where} has no tokenizer (tokenizer.json, or vocab.json + "
                             "merges.txt): pass tokenizer=DIR, the folder of the model's one")
        return cls(model_cfg, params, tok)

    def prompt_ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        encode = getattr(tok, "encode_prompt", None)  # what HF adds, e.g. Llama's BOS
        ids = encode(text) if encode is not None else tok.encode(text)
        return [int(i) for i in ids] or [tok.eos_id]

    def __call__(
        self, prompt: Union[str, Sequence[str]], *, max_new_tokens: Optional[int] = None,
        max_length: Optional[int] = None, do_sample: Optional[bool] = None,
        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
        num_return_sequences: int = 1, repetition_penalty: float = 1.0,
        stop_strings: Union[str, Sequence[str], None] = None, seed: int = 0,
        stop_at_eos: bool = True, return_full_text: bool = True,
    ) -> Union[list[Record], list[list[Record]]]:
        """Records `{"generated_text": ...}`, `num_return_sequences` per prompt (a list of such
        lists for a list of prompts). max_length counts the prompt's tokens too, as in Hugging
        Face (max_new_tokens wins when both are given; default 64 new tokens). do_sample=False
        is greedy (as temperature=0); True samples at `temperature`. A sample stops at EOS and
        after the first token that completes one of `stop_strings` (kept in the text)."""
        if do_sample is False:
            temperature = 0.0
        elif do_sample and temperature == 0:
            raise JaxlmError("do_sample=True needs temperature > 0")
        if max_new_tokens is None and max_length is None:
            max_new_tokens = DEFAULT_MAX_NEW_TOKENS
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if any(not s for s in stops):
            raise JaxlmError("stop_strings must not hold an empty string")
        single = isinstance(prompt, str)
        texts = [prompt] if single else list(prompt)
        tok = self.tokenizer
        out = []
        for text in texts:  # one at a time, as the pipeline does: max_length is per prompt
            ids = self.prompt_ids(text)
            res = generate(
                self.model, self.params, ids, max_new_tokens=max_new_tokens,
                max_length=max_length, temperature=temperature, top_k=top_k, top_p=top_p,
                num_return_sequences=num_return_sequences, repetition_penalty=repetition_penalty,
                eos_id=tok.eos_id if stop_at_eos else None, pad_id=tok.pad_id, seed=seed)
            prefix = len(tok.decode(ids))
            records = []
            for new in res.new_tokens:
                new = new[:_first_stop(tok, new, stops)]
                gen_text = tok.decode(ids + new)[prefix:]
                records.append({"generated_text": text + gen_text if return_full_text
                                else gen_text})
            out.append(records)
        return out[0] if single else out
