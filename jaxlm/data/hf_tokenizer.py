"""Hugging Face tokenizers (the `tokenizers` library): a folder's `tokenizer.json`, or GPT-2 style
`vocab.json` + `merges.txt`, behind jaxlm's tokenizer protocol (jaxlm.data.tokenizers).

`token_bytes` is exact for byte-level BPE (GPT-2, Llama 3, Qwen): each piece is mapped back
through the byte-to-unicode table. Pieces of other models count `<0xNN>` byte-fallback pieces as
one byte, `▁` as a space and drop WordPiece's `##`. Special (added) tokens count 0 bytes.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from jaxlm.errors import JaxlmError

HF_TOKENIZER_FILE = "tokenizer.json"  # the `tokenizers` library's serialization
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"  # GPT-2 style byte-level BPE
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # kept for transformers
HF_FILES = (HF_TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE)
_EOS_GUESSES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")


def has_hf_tokenizer(folder: str | pathlib.Path) -> bool:
    """Whether `folder` holds a Hugging Face tokenizer (tokenizer.json, or vocab.json and
    merges.txt)."""
    f = pathlib.Path(folder)
    return (f / HF_TOKENIZER_FILE).is_file() or ((f / VOCAB_FILE).is_file()
                                                 and (f / MERGES_FILE).is_file())


def is_hf_tokenizer_json(path: pathlib.Path) -> bool:
    """Whether a `tokenizer.json` is the `tokenizers` library's (not jaxlm's old metadata)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(d, dict) and "model" in d and "type" not in d


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: every byte as a printable character (the byte-level BPE alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _uses(component: Any, kind: str) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them) has type `kind`."""
    if not isinstance(component, dict):
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("decoders") or component.get("pretokenizers") or []
    return any(_uses(p, kind) for p in parts)


def _special_name(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """A `tokenizers.Tokenizer` with jaxlm's ids: `eos_id` (required), `pad_id` (the EOS when the
    tokenizer has no pad token, as in GPT-2), `bos_id` (None when it has none).

    `encode` adds no special tokens (training packs documents with EOS between them);
    `encode_prompt` adds what the tokenizer's post-processor adds (e.g. Llama's BOS), as
    Hugging Face's pipelines do. `decode` skips special tokens."""

    def __init__(self, tok: Any, files: dict[str, bytes], source: str = "<memory>"):
        self._tok = tok
        self._files = files  # file name -> content, written by `save`
        self.source = source
        spec = json.loads(tok.to_str())
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        self.byte_level = _uses(spec.get("decoder"), "ByteLevel")
        config = {}
        for name in CONFIG_FILES:
            if name in files:
                try:
                    config.update(json.loads(files[name].decode("utf-8")))
                except (UnicodeDecodeError, ValueError):
                    raise JaxlmError(f"{source}/{name} is not valid JSON") from None
        self._special = {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
        eos = self._id(config.get("eos_token"))
        if eos is None:
            eos = next((i for i in map(tok.token_to_id, _EOS_GUESSES) if i is not None), None)
        if eos is None:
            raise JaxlmError(f"the tokenizer in {source} has no end-of-text token: set "
                             "eos_token in its tokenizer_config.json")
        self.eos_id = eos
        self.bos_id = self._id(config.get("bos_token"))
        pad = self._id(config.get("pad_token"))
        self.pad_id = eos if pad is None else pad
        self._special |= {i for i in (self.eos_id, self.bos_id, pad) if i is not None}

    def _id(self, value: Any) -> Optional[int]:
        name = _special_name(value)
        return None if name is None else self._tok.token_to_id(name)

    @classmethod
    def load(cls, folder: str | pathlib.Path) -> "HFTokenizer":
        """From a folder with tokenizer.json, or vocab.json + merges.txt (byte-level BPE), and
        optionally tokenizer_config.json / special_tokens_map.json (special tokens)."""
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        except ImportError:
            raise JaxlmError(f"reading the Hugging Face tokenizer in {folder} needs the "
                             "`tokenizers` package: pip install 'jaxlm[hf]'") from None
        f = pathlib.Path(folder).expanduser()
        if not f.is_dir():
            raise JaxlmError(f"tokenizer folder {folder} does not exist or is not a directory")
        files = {n: (f / n).read_bytes() for n in CONFIG_FILES if (f / n).is_file()}
        try:
            if (f / HF_TOKENIZER_FILE).is_file():
                tok = Tokenizer.from_file(str(f / HF_TOKENIZER_FILE))
            elif (f / VOCAB_FILE).is_file() and (f / MERGES_FILE).is_file():
                tok = Tokenizer(models.BPE.from_file(str(f / VOCAB_FILE), str(f / MERGES_FILE)))
                tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                tok.decoder = decoders.ByteLevel()
            else:
                raise JaxlmError(f"{folder} has no Hugging Face tokenizer ({HF_TOKENIZER_FILE}, "
                                 f"or {VOCAB_FILE} and {MERGES_FILE})")
        except Exception as e:  # the Rust side raises bare Exception
            if isinstance(e, JaxlmError):
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise JaxlmError(f"cannot read the tokenizer in {folder}: {msg}") from None
        files[HF_TOKENIZER_FILE] = tok.to_str().encode("utf-8")
        return cls(tok, files, source=str(folder))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_prompt(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, np.int32)
        for i in range(self.vocab_size):
            piece = self._tok.id_to_token(i)
            if piece is None or i in self._special:
                continue
            out[i] = self._piece_bytes(piece)
        return out

    def _piece_bytes(self, piece: str) -> int:
        if self.byte_level and all(c in _UNICODE_TO_BYTE for c in piece):
            return len(piece)  # one character per byte
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return 1  # byte fallback
        if piece.startswith("##"):
            piece = piece[2:]
        return len(piece.replace("\u2581", " ").encode("utf-8"))

    def vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def save_pretrained(self, directory: str | pathlib.Path) -> list[str]:
        """The tokenizer's files as transformers' AutoTokenizer reads them (tokenizer.json and
        the special-token configs); their names."""
        for name, data in self._files.items():
            (pathlib.Path(directory) / name).write_bytes(data)
        return sorted(self._files)

    def save(self, directory: pathlib.Path) -> None:
        """`save_pretrained`'s files and jaxlm's metadata naming them."""
        from jaxlm.data.tokenizers import TOKENIZER_META

        directory = pathlib.Path(directory)
        self.save_pretrained(directory)
        meta = {"type": "hf", "files": sorted(self._files), "eos_id": self.eos_id,
                "pad_id": self.pad_id, "bos_id": self.bos_id}
        (directory / TOKENIZER_META).write_text(json.dumps(meta) + "\n")


def vocab_mismatch(model_vocab: int, tok: Any) -> Optional[str]:
    """Why a model with `model_vocab` embeddings cannot have been made with tokenizer `tok`
    (None: it can). Models may pad their vocabulary, but not below the tokenizer's size nor to
    more than twice it (a byte tokenizer's 259 ids under GPT-2's 50257 embeddings)."""
    n = tok.vocab_size
    if n > model_vocab:
        return (f"the tokenizer has {n} tokens but the model's vocabulary holds only "
                f"{model_vocab}")
    if model_vocab > 2 * n:
        return (f"the model's vocabulary ({model_vocab}) is far larger than the tokenizer's "
                f"{n} tokens: they were not made together")
    return None


def load_for_model(where: str | pathlib.Path, model_vocab: int,
                   model_dir: str | pathlib.Path) -> Optional[HFTokenizer]:
    """The tokenizer in folder `where` for the model in `model_dir` with `model_vocab`
    embeddings; None when `where` holds none. One that cannot belong to the model is refused."""
    if not has_hf_tokenizer(where):
        return None
    tok = HFTokenizer.load(where)
    why = vocab_mismatch(model_vocab, tok)
    if why is not None:
        raise JaxlmError(f"the tokenizer in {where} does not fit the model in {model_dir}: {why}")
    return tok
