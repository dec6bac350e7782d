"""Word-level vocabularies: the tokenizer of word-level language models imported from PyTorch
(e.g. pytorch/examples' word_language_model, whose corpus is `line.split() + ['<eos>']`).

A vocabulary file is one token per line (line i is id i), or a JSON object {token: id} (ids
0..n-1, each once). Text is split on whitespace, each line break is the end-of-sequence token
(`<eos>`, `</s>`, ...; the vocabulary must hold one), a word not in the vocabulary is its unknown
token (`<unk>`, ...) or an error. Decoding joins words with single spaces and `<eos>` with
newlines. `token_bytes` counts a word's UTF-8 bytes plus one for the space or newline after it
(the end-of-sequence token 0), exact for text in that form: single spaces, each line ending in a
newline (what decoding produces).
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import numpy as np

from jaxlm.errors import JaxlmError

VOCAB_FILE = "word_vocab.txt"  # in a run directory, named by the tokenizer metadata file
EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "[SEP]", "<EOS>")
PAD_NAMES = ("<pad>", "[PAD]", "<PAD>")
UNK_NAMES = ("<unk>", "[UNK]", "<UNK>", "<oov>")
VOCAB_HINT = "one token per line (line i = id i), or a JSON {token: id} map"


def _first(index: dict[str, int], names: Sequence[str]) -> Optional[int]:
    return next((index[n] for n in names if n in index), None)


class WordTokenizer:
    """Whitespace-separated words -> ids of a fixed vocabulary (`tokens[i]` is id i)."""

    kind = "word"

    def __init__(self, tokens: Sequence[str], source: str = "<memory>"):
        self.tokens = list(tokens)
        self.source = source
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            dup = next(t for i, t in enumerate(self.tokens) if self._index[t] != i)
            raise JaxlmError(f"vocabulary {source}: token {dup!r} appears twice")
        bad = next((t for t in self.tokens if not t or len(t.split()) != 1 or t.strip() != t),
                   None)
        if bad is not None:
            raise JaxlmError(f"vocabulary {source}: token {bad!r} is empty or holds whitespace "
                             "(words are split on whitespace)")
        eos = _first(self._index, EOS_NAMES)
        if eos is None:
            raise JaxlmError(f"vocabulary {source} has no end-of-sequence token (one of "
                             f"{', '.join(EOS_NAMES)}), which marks line ends")
        self.vocab_size = len(self.tokens)
        self.eos_id = eos
        pad = _first(self._index, PAD_NAMES)
        self.pad_id = eos if pad is None else pad  # padding is masked or left of the prompt
        self.unk_id = _first(self._index, UNK_NAMES)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "WordTokenizer":
        """A vocabulary file: one token per line, or a .json {token: id} map (module doc)."""
        p = pathlib.Path(path).expanduser()
        try:
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise JaxlmError(f"vocabulary file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise JaxlmError(f"vocabulary file {p} cannot be read as UTF-8 text "
                             f"({type(e).__name__}); expected {VOCAB_HINT}") from None
        if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            return cls(_json_tokens(text, p), str(p))
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        tokens = [line.rstrip("\r") for line in lines]
        if not tokens:
            raise JaxlmError(f"vocabulary file {p} is empty; expected {VOCAB_HINT}")
        return cls(tokens, str(p))

    def encode(self, text: str) -> np.ndarray:
        ids: list[int] = []
        for n, line in enumerate(text.split("\n")):
            if n:
                ids.append(self.eos_id)
            for word in line.split():
                i = self._index.get(word, self.unk_id)
                if i is None:
                    raise JaxlmError(f"the word {word!r} is not in the vocabulary "
                                     f"({self.source}), which has no unknown token (<unk>)")
                ids.append(i)
        return np.asarray(ids, np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        for i in (int(i) for i in ids):
            if i == self.eos_id:
                out.append("\n")
            elif i != self.pad_id and 0 <= i < self.vocab_size:
                out.append(self.tokens[i] if not out or out[-1] == "\n"
                           else " " + self.tokens[i])
        return "".join(out)

    def token_bytes(self) -> np.ndarray:
        out = np.asarray([len(t.encode("utf-8")) + 1 for t in self.tokens], np.int32)
        out[[self.eos_id, self.pad_id]] = 0
        return out

    def save(self, directory: pathlib.Path) -> None:
        from jaxlm.data.tokenizers import TOKENIZER_JSON

        directory = pathlib.Path(directory)
        (directory / VOCAB_FILE).write_text("".join(t + "\n" for t in self.tokens),
                                            encoding="utf-8")
        (directory / TOKENIZER_JSON).write_text(
            json.dumps({"type": "word", "vocab": VOCAB_FILE}) + "\n")


def _json_tokens(text: str, path: pathlib.Path) -> list[str]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as e:
        raise JaxlmError(f"vocabulary file {path} is not valid JSON ({e.msg}, line {e.lineno}); "
                         f"expected {VOCAB_HINT}") from None
    if not isinstance(mapping, dict) or not mapping or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise JaxlmError(f"vocabulary file {path} is not a JSON object of {{token: integer id}}")
    by_id = sorted(mapping.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise JaxlmError(f"vocabulary file {path}: the ids are not 0..{len(by_id) - 1}, each once")
    return [t for t, _ in by_id]
