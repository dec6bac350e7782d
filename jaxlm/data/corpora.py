"""Text corpora as random-access sequences of documents (str), split into train / eval.

- `stdlib`: the running Python's standard library source (.py files, sorted), present on every
  machine with no download. A file is held out for eval when the hash of its relative path falls
  below `validation_fraction`, so the split is the same on every run and machine.
- a local file, directory or glob: prepared once by a tensorflow-datasets builder into
  ArrayRecord (cached under `cache_dir`, keyed by the files' paths, sizes and mtimes) and read
  with tfds's data source, no TensorFlow needed. Files split as above; a single file gives its
  last `validation_fraction` of lines to eval. A JSON Lines file (`.jsonl`) holds one document
  per line, the record's `text_key` field; a single one gives its last records to eval.
  Symlinked folders are not descended into, and a file reached by several paths (symlinks, hard
  links) is read once, so it is in one split only.
- `tfds:NAME`: a registered tfds dataset read through `tfds.data_source`, text from `text_key`;
  it must be prepared already (nothing is downloaded unless `data.tfds_download=true`).
- `hf:PATH` (or a `.parquet` / `.arrow` path, a `save_to_disk` folder): a Hugging Face dataset
  from local files, text from `text_key` (jaxlm/data/hf_datasets.py).
Undecodable bytes are replaced with U+FFFD, never fatal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import sysconfig
from typing import Any, Iterator, Optional, Sequence

from jaxlm.errors import JaxlmError


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    train: Sequence[str]
    eval: Sequence[str]


class _Files(Sequence[str]):
    """Documents read lazily from a list of files."""

    def __init__(self, paths: Sequence[pathlib.Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        return self.paths[i].read_bytes().decode("utf-8", errors="replace")


class _TextView(Sequence[str]):
    """The text feature of a tfds data source, as str."""

    def __init__(self, source: Any, key: str):
        self.source, self.key = source, key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        n = len(self)
        if not -n <= i < n:  # IndexError ends `for doc in ...`; the tfds source raises ValueError
            raise IndexError(f"document {i} of {n}")
        value = self.source[i % n][self.key]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def is_validation(relpath: str, fraction: float) -> bool:
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _split_paths(paths: Sequence[pathlib.Path], root: pathlib.Path, fraction: float):
    train, val = [], []
    for p in paths:
        (val if is_validation(p.relative_to(root).as_posix(), fraction) else train).append(p)
    if not val or not train:  # tiny directories: keep both splits non-empty, deterministically
        val, train = list(paths[-1:]), list(paths[:-1])
    return train, val


def stdlib_files() -> tuple[pathlib.Path, list[pathlib.Path]]:
    """The standard library's .py files, sorted. The skipped folders are pruned while walking,
    not filtered afterwards: an installed site-packages under the stdlib folder (pyenv, a
    system Python) holds tens of thousands of entries, which took seconds per run to list."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = []
    for folder, dirs, names in os.walk(root):  # like rglob: symlinked folders not entered
        dirs[:] = [d for d in dirs if d not in skip]
        files += [pathlib.Path(folder, n) for n in names if n.endswith(".py")]
    return root, sorted(files)


def stdlib_corpus(validation_fraction: float) -> Corpus:
    root, files = stdlib_files()
    if not files:
        raise JaxlmError(f"no .py files found in the Python standard library at {root}")
    train, val = _split_paths(files, root, validation_fraction)
    return Corpus(f"stdlib:{root}", _Files(train), _Files(val))


def _glob(spec: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """(the pattern's fixed leading folder, the files it matches). pathlib's `**` does not
    descend into symlinked directories (glob.glob's does, endlessly through a symlink loop);
    hidden names below the folder are skipped, as glob.glob and a directory corpus do."""
    parts = pathlib.Path(os.path.expanduser(spec)).parts
    fixed = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")),
                 len(parts) - 1)
    base = pathlib.Path(*parts[:fixed]) if fixed else pathlib.Path(".")
    pattern = "/".join(parts[fixed:])
    if pattern.endswith("**"):  # pathlib's trailing ** matches folders only
        pattern += "/*"
    files = [p for p in base.glob(pattern) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(base).parts)]
    return base, files


def _unique(files: Sequence[pathlib.Path]) -> list[pathlib.Path]:
    """`files` sorted, each file once: two paths to one file (a symlink, a hard link, a path
    through a symlinked folder) keep the first, so no file is in both train and eval."""
    seen, out = set(), []
    for p in sorted(files):
        st = p.stat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(p)
    return out


def _local_files(spec: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    path = pathlib.Path(spec).expanduser()
    if path.is_file():
        root, files = path.parent, [path]
    elif path.is_dir():  # rglob does not descend into symlinked directories
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        root = path
    elif any(ch in spec for ch in "*?["):
        base, files = _glob(spec)
        root = pathlib.Path(os.path.commonpath([str(p.parent) for p in files])) if files else base
    else:
        raise JaxlmError(f"data.corpus: no such file or directory: {spec}")
    files = _unique(files)
    if not files:
        raise JaxlmError(f"data.corpus: no files found at {spec}")
    for p in files:  # open, not os.access: root passes access() for files it cannot read
        try:
            with open(p, "rb") as f:
                f.read(1)
        except OSError as e:
            raise JaxlmError(f"data.corpus: cannot read {p}: {e.strerror}") from None
    if all(p.stat().st_size == 0 for p in files):
        raise JaxlmError(f"data.corpus: every file at {spec} is empty")
    if len(files) == 1 and files[0].stat().st_size < 2:
        raise JaxlmError(f"data.corpus: {files[0]} is too short to split into train and eval text")
    return root, files


def _corpus_key(train: Sequence[pathlib.Path], val: Sequence[pathlib.Path], single: float,
                text_key: str = "text") -> str:
    h = hashlib.sha256(f"single={single}".encode())
    if any(p.suffix.lower() == ".jsonl" for p in [*train, *val]):  # read by record since 21.14
        h.update(f"jsonl\0text_key={text_key}\n".encode())
    for tag, paths in (("train", train), ("val", val)):
        for p in paths:
            st = p.stat()
            h.update(f"{tag}\0{p.absolute()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "c" + h.hexdigest()[:16]



@contextlib.contextmanager
def _held(lock_path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` for the block (waits for another holder); without one
    where the filesystem refuses locks."""
    import fcntl

    try:
        f = open(lock_path, "a")
    except OSError:
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        yield

def local_corpus(spec: str, validation_fraction: float, cache_dir: Optional[str],
                 text_key: str = "text") -> Corpus:
    """The files at `spec` (see the module docstring); a `.jsonl` file's documents are its
    records' `text_key` fields."""
    from jaxlm.data import local_tfds

    root, files = _local_files(spec)
    if len(files) == 1:
        train, val, single = files, [], validation_fraction
    else:
        (train, val), single = _split_paths(files, root, validation_fraction), 0.0
    data_dir = pathlib.Path(cache_dir or "~/.cache/jaxlm/tfds").expanduser()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JaxlmError(f"data.cache_dir: cannot create {data_dir}: {e.strerror}") from None
    key = _corpus_key(train, val, single, text_key)
    make = lambda: local_tfds.LocalTextCorpus(  # noqa: E731
        train_files=[str(p) for p in train], validation_files=[str(p) for p in val],
        single_file_validation=single, text_key=text_key, key=key, data_dir=str(data_dir))
    builder = make()
    if not builder.is_prepared():
        # Two runs starting on one new corpus (a sweep's members, a multi-process run on one
        # host) would both write its folder; the second waits for the first, then reads it.
        with _held(data_dir / f".{key}.lock"):
            builder = make()
            if not builder.is_prepared():
                import tensorflow_datasets as tfds

                print(f"jaxlm: preparing {len(files)} local file(s) as ArrayRecord in "
                      f"{builder.data_dir} (once)", flush=True)
                tfds.display_progress_bar(False)
                builder.download_and_prepare()
    corpus = Corpus(
        f"local:{spec}",
        _TextView(builder.as_data_source(split="train"), "text"),
        _TextView(builder.as_data_source(split="validation"), "text"),
    )
    for split, docs in (("train", corpus.train), ("eval", corpus.eval)):
        if len(docs) == 0:  # e.g. a .jsonl file of blank lines
            raise JaxlmError(f"data.corpus: the {split} split of {spec} holds no documents")
    return corpus


def tfds_corpus(
    name: str, *, text_key: str, train_split: str, eval_split: str,
    data_dir: Optional[str], download: bool,
) -> Corpus:
    import tensorflow_datasets as tfds

    def not_prepared(e: Exception) -> JaxlmError:
        where = data_dir or tfds.core.constants.get_default_data_dir()
        command = f"tfds build {name} --file_format=array_record" + (
            f" --data_dir={data_dir}" if data_dir else "")
        hint = "" if download else (
            f"; prepare it once with `{command}` (tfds's command line needs TensorFlow: pip "
            "install tensorflow), or set data.tfds_download=true")
        return JaxlmError(f"data.corpus: tfds dataset '{name}' is not prepared in {where}{hint} "
                          f"({str(e).splitlines()[0][:200]})")

    def source(split: str, key: str) -> Any:
        # a download prepares array_record, the random-access format (tfds's default only
        # without a data_dir)
        prepare = {"file_format": "array_record"} if download else None
        try:
            return tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                                    download_and_prepare_kwargs=prepare)
        except tfds.core.registered.DatasetNotFoundError:
            raise JaxlmError(f"data.corpus: tfds has no dataset named '{name}'") from None
        except KeyError as e:  # an unprepared dataset has no splits: "`splits` is empty"
            raise not_prepared(e) from None
        except (AssertionError, FileNotFoundError, NotImplementedError) as e:
            raise not_prepared(e) from None
        except ValueError as e:
            raise JaxlmError(f"data.{key}='{split}' for tfds:{name}: {str(e).splitlines()[0]}") from None

    train, ev = source(train_split, "train_split"), source(eval_split, "eval_split")
    if len(train) == 0:
        raise JaxlmError(f"data.corpus: tfds:{name} split '{train_split}' is empty")
    keys = list(train[0].keys()) if hasattr(train[0], "keys") else []
    if text_key not in keys:
        raise JaxlmError(
            f"data.text_key='{text_key}' is not a feature of tfds:{name} (features: {keys})"
        )
    return Corpus(f"tfds:{name}", _TextView(train, text_key), _TextView(ev, text_key))


def load_corpus(
    corpus: str, *, validation_fraction: float = 0.05, text_key: str = "text",
    train_split: str = "train", eval_split: str = "validation",
    tfds_data_dir: Optional[str] = None, tfds_download: bool = False,
    cache_dir: Optional[str] = None,
) -> Corpus:
    """The corpus named by `data.corpus`: 'stdlib', a path / directory / glob, 'tfds:NAME', or
    a Hugging Face dataset from local files (`hf:PATH`, .parquet/.arrow, a save_to_disk folder:
    jaxlm/data/hf_datasets.py)."""
    from jaxlm.data import hf_datasets

    if corpus == "stdlib":
        return stdlib_corpus(validation_fraction)
    if hf_datasets.is_hf_spec(corpus):
        return hf_datasets.hf_corpus(
            corpus, text_key=text_key, train_split=train_split, eval_split=eval_split,
            validation_fraction=validation_fraction, cache_dir=cache_dir)
    if corpus.startswith("tfds:"):
        return tfds_corpus(
            corpus[len("tfds:"):], text_key=text_key, train_split=train_split,
            eval_split=eval_split, data_dir=tfds_data_dir, download=tfds_download,
        )
    return local_corpus(corpus, validation_fraction, cache_dir, text_key)
