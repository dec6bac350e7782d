"""jaxlm.data.corpora: the stdlib corpus (deterministic, disjoint split by path hash) and
tfds:NAME corpora (offline, with tfds's mock data)."""

from __future__ import annotations

import os
import pathlib

import pytest

from jaxlm.data.corpora import is_validation, load_corpus, stdlib_files
from jaxlm.errors import JaxlmError


# ---------------------------------------------------------------------------------------------
# stdlib corpus


@pytest.fixture(scope="module")
def stdlib_pair():
    return load_corpus("stdlib", validation_fraction=0.05), load_corpus("stdlib",
                                                                         validation_fraction=0.05)


def _paths(seq) -> list[pathlib.Path]:
    return list(seq.paths)


def test_stdlib_split_is_deterministic(stdlib_pair):
    a, b = stdlib_pair
    assert _paths(a.train) == _paths(b.train)
    assert _paths(a.eval) == _paths(b.eval)
    assert a.name == b.name


def test_stdlib_split_disjoint_nonempty(stdlib_pair):
    c, _ = stdlib_pair
    train, ev = set(_paths(c.train)), set(_paths(c.eval))
    assert len(train) > 100 and len(ev) > 0
    assert not train & ev
    root, files = stdlib_files()
    assert train | ev == set(files)
    assert all(p.suffix == ".py" for p in files)
    assert not any("site-packages" in p.parts for p in files)


def test_stdlib_files_are_the_rglob_listing():
    """The pruned walk lists exactly what filtering pathlib's rglob lists (the slow way)."""
    root, files = stdlib_files()
    skip = {"site-packages", "dist-packages", "__pycache__"}
    assert files == sorted(p for p in root.rglob("*.py")
                           if not skip.intersection(p.relative_to(root).parts))


def test_stdlib_docs_are_text(stdlib_pair):
    c, _ = stdlib_pair
    root, _ = stdlib_files()
    first = c.train.paths[0]
    assert c.train[0] == first.read_bytes().decode("utf-8", errors="replace")
    assert isinstance(c.eval[len(c.eval) - 1], str)
    assert any("def " in c.train[i] for i in range(20))


def test_is_validation_pure_function_of_path(stdlib_pair):
    c, _ = stdlib_pair
    root, _ = stdlib_files()
    for p in _paths(c.eval):
        rel = p.relative_to(root).as_posix()
        assert is_validation(rel, 0.05)
    for p in _paths(c.train)[:200]:
        assert not is_validation(p.relative_to(root).as_posix(), 0.05)
    # Only the path string matters: no file needs to exist.
    names = [f"x/{i}.py" for i in range(200)]
    assert 20 < sum(is_validation(n, 0.3) for n in names) < 100
    # monotone in the fraction, and the extremes behave
    assert all(is_validation(n, 1.0) for n in names)
    assert not any(is_validation(n, 0.0) for n in names)
    assert all(is_validation(n, 0.5) for n in names if is_validation(n, 0.2))


def test_is_validation_same_in_another_process():
    """The split must not depend on the process (e.g. Python's salted str hash)."""
    import os
    import subprocess
    import sys

    names = [f"pkg/mod_{i}.py" for i in range(300)]
    here = "".join("1" if is_validation(n, 0.3) else "0" for n in names)
    code = ("import sys; from jaxlm.data.corpora import is_validation; "
            "print(''.join('1' if is_validation(f'pkg/mod_{i}.py', 0.3) else '0' "
            "for i in range(300)))")
    env = dict(os.environ, PYTHONHASHSEED="12345", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == here


def test_stdlib_eval_fraction_roughly_matches(stdlib_pair):
    c, _ = stdlib_pair
    frac = len(c.eval) / (len(c.eval) + len(c.train))
    assert 0.02 < frac < 0.10, frac
    c30 = load_corpus("stdlib", validation_fraction=0.3)
    frac30 = len(c30.eval) / (len(c30.eval) + len(c30.train))
    assert 0.24 < frac30 < 0.36, frac30


# ---------------------------------------------------------------------------------------------
# tfds:NAME, offline with tfds's mock data (only here: the mock intercepts every builder)


def test_tfds_corpus_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        c = load_corpus("tfds:tiny_shakespeare", eval_split="test")
        assert c.name == "tfds:tiny_shakespeare"
        assert len(c.train) == 6
        assert all(isinstance(c.train[i], str) for i in range(6))
        assert len(c.eval) == 6 and isinstance(c.eval[0], str)
        assert any(len(c.train[i]) > 0 for i in range(6))


def test_tfds_wrong_text_key():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(JaxlmError) as info:
            load_corpus("tfds:tiny_shakespeare", eval_split="test", text_key="content")
    assert "data.text_key" in str(info.value)
    assert "content" in str(info.value)


def test_tfds_unknown_dataset():
    with pytest.raises(JaxlmError) as info:
        load_corpus("tfds:no_such_dataset_jaxlm_test")
    assert "no_such_dataset_jaxlm_test" in str(info.value)


# ---------------------------------------------------------------------------------------------
# local files: each file once, in one split only


def _docs(c) -> list[str]:
    return [c.train[i] for i in range(len(c.train))] + [c.eval[i] for i in range(len(c.eval))]


def _texts(root: pathlib.Path, n: int) -> list[str]:
    texts = [f"document {i}: " + f"words of file {i} " * 20 + "\n" for i in range(n)]
    for i, t in enumerate(texts):
        p = root / ("sub" if i % 2 else ".") / f"doc{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(t)
    return texts


@pytest.mark.parametrize("spec", ["**/*.txt", "*/*/*.txt", "**", "."])
def test_local_symlink_loop_is_not_followed(tmp_path, spec):
    """A symlink from a subfolder back to the corpus root: glob.glob followed it until the path
    got too long (3 files became 123 documents, eval ones copies of train ones)."""
    root = tmp_path / "corpus"
    texts = _texts(root, 6)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    c = load_corpus(str(root / spec) if spec != "." else str(root), validation_fraction=0.4,
                    cache_dir=str(tmp_path / "cache"))
    docs = _docs(c)
    want = texts[0::2] if spec == "*/*/*.txt" else texts  # the root's, through sub/loop
    assert sorted(docs) == sorted(want), len(docs)
    train, ev = {c.train[i] for i in range(len(c.train))}, {c.eval[i] for i in range(len(c.eval))}
    assert train and ev and not train & ev


@pytest.mark.parametrize("spec", ["*.txt", "."])
def test_local_linked_duplicate_file_counts_once(tmp_path, spec):
    """A symlink and a hard link to a file are the same document, never one in each split."""
    root = tmp_path / "corpus"
    root.mkdir()
    texts = [f"text number {i} " * 30 + "\n" for i in range(4)]
    for i, t in enumerate(texts):
        (root / f"f{i}.txt").write_text(t)
    for i in range(8):  # enough names that a copy would land in the other split
        (root / f"z_sym{i}.txt").symlink_to(root / "f0.txt")
        os.link(root / "f1.txt", root / f"z_hard{i}.txt")
    c = load_corpus(str(root / spec) if spec != "." else str(root), validation_fraction=0.5,
                    cache_dir=str(tmp_path / "cache"))
    assert sorted(_docs(c)) == sorted(texts)


def test_tfds_unprepared_dataset_says_how_to_prepare_it(tmp_path):
    """An unprepared dataset (configs/gpt2_small.yaml's tfds:lm1b on a fresh machine) was a
    KeyError traceback ("`splits` is empty"); nothing may be downloaded."""
    empty = tmp_path / "tfds"
    with pytest.raises(JaxlmError) as info:
        load_corpus("tfds:lm1b", eval_split="test", tfds_data_dir=str(empty))
    msg = str(info.value)
    assert "not prepared" in msg and str(empty) in msg
    assert f"tfds build lm1b --file_format=array_record --data_dir={empty}" in msg
    assert "data.tfds_download=true" in msg and "\n" not in msg
    assert not empty.exists() or not any(empty.rglob("*.array_record*"))


def test_two_processes_prepare_one_new_corpus_together(tmp_path):
    """Two runs starting at once on a new local corpus (a sweep's members on Ray, two runs on a
    fresh machine) both read it: the second waits for the first's preparation instead of
    failing on the folder it is writing (tfds raised FileExistsError)."""
    import subprocess
    import sys

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        (texts / f"doc{i:02d}.txt").write_text(f"document {i}\n" * (i + 1))
    code = ("import sys; from jaxlm.data.corpora import load_corpus; "
            "c = load_corpus(sys.argv[1], validation_fraction=0.1, cache_dir=sys.argv[2]); "
            "print(len(c.train), len(c.eval))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(texts), str(tmp_path / "cache")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    counts = [out.split()[-2:] for out, _ in outs]
    assert counts[0] == counts[1] and sum(map(int, counts[0])) == 40, counts
