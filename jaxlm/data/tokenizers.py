"""Tokenizers: byte-level (default, nothing to train), SentencePiece (BPE / unigram), and Hugging
Face `tokenizers` (jaxlm.data.hf_tokenizer).

Byte and SentencePiece share special ids pad=0 and eos=1. All expose `token_bytes`: for every
id, how many UTF-8 bytes of text it stands for (0 for specials). Summing it over evaluated
targets gives the exact byte count behind bits-per-byte, whatever the tokenizer.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import random
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxlm.errors import JaxlmError
from jaxlm.progress import interactive, log, progress

PAD_ID = 0
EOS_ID = 1
# jaxlm's tokenizer metadata in a run directory (its type, and the files it names). It was
# called tokenizer.json, which is Hugging Face's name: that old name is still read.
TOKENIZER_META = "jaxlm_tokenizer.json"
LEGACY_TOKENIZER_META = "tokenizer.json"
TOKENIZER_JSON = TOKENIZER_META  # the name callers knew this constant by
SP_MODEL_FILE = "tokenizer.model"
_META = "\u2581"  # SentencePiece's whitespace marker


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_bytes(self) -> np.ndarray: ...

    def save(self, directory: pathlib.Path) -> None: ...


class ByteTokenizer:
    """UTF-8 bytes shifted past the specials: <pad>=0, <eos>=1, <mask>=2, byte b -> b + 3."""

    specials = ("<pad>", "<eos>", "<mask>")
    offset = len(specials)
    vocab_size = 256 + offset
    pad_id, eos_id, mask_id = PAD_ID, EOS_ID, 2

    def encode(self, text: str) -> np.ndarray:
        raw = np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)
        return raw.astype(np.int32) + self.offset

    def decode(self, ids: Sequence[int]) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        raw = (ids[ids >= self.offset] - self.offset).astype(np.uint8).tobytes()
        return raw.decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        out = np.ones(self.vocab_size, np.int32)
        out[: self.offset] = 0
        return out

    def save(self, directory: pathlib.Path) -> None:
        (pathlib.Path(directory) / TOKENIZER_META).write_text(json.dumps({"type": "byte"}) + "\n")


@contextlib.contextmanager
def _elapsed_bar(desc: str, enabled: bool, start: Callable[[], bool]) -> Iterator[None]:
    """A bar counting seconds from when `start()` turns true until the block ends (for work
    that reports no progress of its own)."""
    if not enabled:
        yield
        return
    if not interactive():  # a log file or a pipe: plain lines, no redrawn bar
        t0 = time.monotonic()
        log(f"{desc} ...")
        yield
        log(f"{desc}: done in {time.monotonic() - t0:.0f} s")
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5) and not start():
            pass
        if done.is_set():
            return
        with tqdm(desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr, leave=False) as bar:
            while not done.wait(1.0):
                bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class SentencePieceTokenizer:
    """A SentencePiece model with pad=0, eos=1, unk=2, no BOS, byte fallback, no normalization."""

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        import sentencepiece as spm

        self._proto = model_proto
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:  # sentencepiece raises bare RuntimeError/OSError
            raise JaxlmError(f"cannot load SentencePiece model {source}: {e}") from None
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id = self._sp.pad_id()
        self.eos_id = self._sp.eos_id()
        # masked LM: a `<mask>` piece if the model has one, else `<unk>`, which byte fallback
        # keeps out of encoded text (so it can stand for "masked" unambiguously)
        mask = self._sp.piece_to_id("<mask>")
        self.mask_id = mask if not self._sp.is_unknown(mask) else self._sp.unk_id()
        if self.pad_id < 0 or self.eos_id < 0:
            raise JaxlmError(f"SentencePiece model {source} needs pad and eos pieces")
        # SentencePiece reads a literal U+2581 in text as its whitespace marker (a space); encode
        # it as its three UTF-8 byte pieces instead so it round-trips.
        self._meta_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
        if any(self._sp.is_unknown(i) for i in self._meta_ids):
            self._meta_ids = []  # no byte fallback: the marker cannot be kept

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "SentencePieceTokenizer":
        p = pathlib.Path(path)
        if not p.is_file():
            raise JaxlmError(f"SentencePiece model not found: {path}")
        return cls(p.read_bytes(), source=str(p))

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_type: str = "bpe",
        max_chars: int = 5_000_000, seed: int = 0, show_progress: bool = False,
    ) -> "SentencePieceTokenizer":
        """Trains on a seeded sample of lines (up to `max_chars` characters) from `texts`.

        `show_progress`: a bar (stderr) while SentencePiece reads the lines, then one that
        counts the seconds of training proper (SentencePiece reports no progress to follow)."""
        import sentencepiece as spm

        lines = [line for t in texts for line in t.split("\n") if line.strip()]
        random.Random(seed).shuffle(lines)
        sample, total = [], 0
        for line in lines:
            if total >= max_chars:
                break
            sample.append(line)
            total += len(line)
        if not sample:
            raise JaxlmError("cannot train a SentencePiece model: the training text is empty")
        model = io.BytesIO()
        reading = progress(len(sample), desc="tokenizer: reading", unit="line",
                           enabled=show_progress, leave=False)
        n_read = 0

        def lines() -> Iterator[str]:
            nonlocal n_read
            for line in sample:
                n_read += 1
                reading.update(1)
                yield line
        try:
            with _elapsed_bar(f"tokenizer: training {vocab_size} {model_type} pieces",
                              show_progress, start=lambda: n_read == len(sample)):
                spm.SentencePieceTrainer.train(
                    sentence_iterator=lines(), model_writer=model, vocab_size=vocab_size,
                    model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2, bos_id=-1,
                    byte_fallback=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, add_dummy_prefix=False,
                    allow_whitespace_only_pieces=True, split_digits=True,
                    user_defined_symbols=["\n", "\t"], max_sentence_length=1 << 16,
                    num_threads=2, minloglevel=2,
                )
        except RuntimeError as e:
            raise JaxlmError(f"SentencePiece training failed: {str(e).splitlines()[0]}") from None
        reading.close()
        return cls(model.getvalue(), source="<trained>")

    def encode(self, text: str) -> np.ndarray:
        if _META not in text or not self._meta_ids:
            return np.asarray(self._sp.encode(text), dtype=np.int32)
        ids: list[int] = []
        for i, part in enumerate(text.split(_META)):
            if i:
                ids.extend(self._meta_ids)
            if part:
                ids.extend(self._sp.encode(part))
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.eos_id)]
        return self._sp.decode(ids)

    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, np.int32)
        for i in range(self.vocab_size):
            if self._sp.is_control(i) or self._sp.is_unknown(i):
                continue
            if self._sp.is_byte(i):
                out[i] = 1
            else:
                out[i] = len(self._sp.id_to_piece(i).replace(_META, " ").encode("utf-8"))
        return out

    def save(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        (directory / SP_MODEL_FILE).write_bytes(self._proto)
        (directory / TOKENIZER_META).write_text(
            json.dumps({"type": "sentencepiece", "model": SP_MODEL_FILE}) + "\n"
        )


def tokenizer_meta_path(directory: str | pathlib.Path) -> Optional[pathlib.Path]:
    """The jaxlm tokenizer metadata of a run directory: jaxlm_tokenizer.json, or in a run
    directory written before it had that name, a tokenizer.json that is jaxlm's (not Hugging
    Face's); None when it has neither."""
    d = pathlib.Path(directory)
    if (d / TOKENIZER_META).is_file():
        return d / TOKENIZER_META
    legacy = d / LEGACY_TOKENIZER_META
    if legacy.is_file():
        from jaxlm.data.hf_tokenizer import is_hf_tokenizer_json

        return None if is_hf_tokenizer_json(legacy) else legacy
    return None


def load_tokenizer(directory: str | pathlib.Path) -> Tokenizer:
    """Loads the tokenizer a run saved into `directory`."""
    meta_path = tokenizer_meta_path(directory)
    if meta_path is None:
        raise JaxlmError(f"no tokenizer in {directory} (missing {TOKENIZER_META})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise JaxlmError(f"{meta_path} cannot be read as jaxlm's tokenizer file "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "it is damaged: restore it, or copy the one of the run these weights "
                         "came from") from None
    if not isinstance(meta, dict):
        raise JaxlmError(f"{meta_path} is not jaxlm's tokenizer file (not a JSON object)")
    if meta.get("type") == "byte":
        return ByteTokenizer()
    if meta.get("type") == "sentencepiece":
        return SentencePieceTokenizer.load(pathlib.Path(directory) / meta["model"])
    if meta.get("type") == "hf":
        from jaxlm.data.hf_tokenizer import HFTokenizer

        return HFTokenizer.load(directory)
    if meta.get("type") == "word":  # an imported word-level model's vocabulary
        from jaxlm.data.word_vocab import WordTokenizer

        return WordTokenizer.load(pathlib.Path(directory) / meta["vocab"])
    raise JaxlmError(f"{meta_path}: unknown tokenizer type {meta.get('type')!r}")


def source_tokenizer(source: str | pathlib.Path) -> Optional[Tokenizer]:
    """The tokenizer of a weights source: a jaxlm run directory's, a Hugging Face folder's
    (tokenizer.json, or vocab.json + merges.txt); None when it has none."""
    from jaxlm.data.hf_tokenizer import HFTokenizer, has_hf_tokenizer

    path = pathlib.Path(source).expanduser()
    if tokenizer_meta_path(path) is not None:
        return load_tokenizer(path)
    if has_hf_tokenizer(path):
        return HFTokenizer.load(path)
    return None


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers give every id the same meaning (vocabulary, specials, pieces)."""
    if type(a) is not type(b) or a.vocab_size != b.vocab_size or a.eos_id != b.eos_id:
        return False
    if hasattr(a, "vocab"):
        return a.vocab() == b.vocab()
    return all(a.decode([i]) == b.decode([i]) for i in range(a.vocab_size))


def _configured(d: Any, train_texts: Sequence[str], log: Callable[[str], None],
                show: bool) -> Tokenizer:
    if d.tokenizer == "byte":
        return ByteTokenizer()
    if d.tokenizer == "hf":
        from jaxlm.data.hf_tokenizer import HFTokenizer

        return HFTokenizer.load(d.hf_tokenizer)
    if d.sp_model:
        return SentencePieceTokenizer.load(d.sp_model)
    return _train_sp(d, train_texts, log, show)


def select_tokenizer(d: Any, train_texts: Sequence[str], workdir: pathlib.Path,
                     init_from: Optional[str], log: Callable[[str], None],
                     show: bool = False, source_key: str = "train.init_from") -> Tokenizer:
    """The tokenizer of a run (`d`: its DataConfig): the run directory's own when resuming, the
    one the `init_from` weights were made with (a configured `hf` or SentencePiece model must
    agree with it; weights without one need `data.tokenizer=hf`), else byte-level, a Hugging
    Face or SentencePiece model, or one trained on `train_texts`. `source_key` is the config key
    that named `init_from` (a branch's trunk comes from train.branch_from), for the errors."""
    if tokenizer_meta_path(workdir) is not None:
        return load_tokenizer(workdir)
    if not init_from:
        return _configured(d, train_texts, log, show)
    own = source_tokenizer(init_from)
    given = d.tokenizer == "hf" and d.hf_tokenizer or d.tokenizer == "sentencepiece" and d.sp_model
    if own is None and not given:
        raise JaxlmError(
            f"{source_key}={init_from} has no tokenizer, and its token ids mean nothing to "
            f"data.tokenizer={d.tokenizer}: give the one its weights were made with, "
            "data.tokenizer=hf data.hf_tokenizer=DIR (a folder with tokenizer.json, or "
            "vocab.json + merges.txt)")
    if own is None:
        mine = _configured(d, train_texts, log, show)
        _check_fits(mine, init_from, source_key, f"data.hf_tokenizer={d.hf_tokenizer}"
                    if d.tokenizer == "hf" else f"data.sp_model={d.sp_model}")
        return mine
    if given:
        mine = _configured(d, train_texts, log, show)
        if not same_tokenizer(mine, own):
            what = d.hf_tokenizer if d.tokenizer == "hf" else d.sp_model
            raise JaxlmError(f"{source_key}={init_from}: its tokenizer ({own.vocab_size} "
                             f"tokens) differs from the configured {what} ({mine.vocab_size} "
                             "tokens): the weights' token ids would mean other text; drop the "
                             "tokenizer setting to use the weights' own")
    return own  # fine-tuning: the token ids the weights were made with


def _check_fits(tok: Tokenizer, source: str, source_key: str, what: str) -> None:
    """Refuses a tokenizer that cannot belong to the Hugging Face weights in `source` (their
    config.json's vocab_size); other sources are checked against model.vocab_size later."""
    from jaxlm.data.hf_tokenizer import vocab_mismatch

    try:
        config = json.loads((pathlib.Path(source).expanduser() / "config.json").read_text())
        vocab = int(config["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    why = vocab_mismatch(vocab, tok)
    if why is not None:
        raise JaxlmError(f"{what} does not fit the weights of {source_key}={source}: {why}")


def _train_sp(d: Any, train_texts: Sequence[str], log: Callable[[str], None],
              show: bool) -> Tokenizer:
    log(f"training a SentencePiece {d.sp_model_type} tokenizer ({d.sp_vocab_size} pieces) "
        f"on up to {d.sp_train_chars:,} characters of the train split")
    order = np.random.default_rng(d.seed).permutation(len(train_texts))
    texts, total = [], 0
    for i in order:
        if total >= d.sp_train_chars:
            break
        texts.append(train_texts[int(i)])
        total += len(texts[-1])
    t0 = time.time()
    tok = SentencePieceTokenizer.train(texts, d.sp_vocab_size, d.sp_model_type,
                                       max_chars=d.sp_train_chars, seed=d.seed,
                                       show_progress=show)
    log(f"trained the tokenizer in {time.time() - t0:.1f} s")
    return tok
