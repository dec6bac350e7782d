"""Faults: bad input and failing writes.

Bad input: one line `jaxlm: error: ...` on stderr, a non-zero exit, no traceback, and an
existing run directory left byte for byte as it was. Config errors (rejected while the config
loads, before anything else happens) run in-process through `jaxlm.cli.main`, the function
`train.py` calls; everything that gets further runs `python train.py` as a user does, all
processes at once (start-up dominates), with one config error among them for the process-level
contract (exit status, nothing else on stderr).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from jaxlm.config import load_config
from jaxlm.train.loop import train

from helpers import REPO_ROOT, TINY, _ckpt_steps, _cmd, _env, _main, _records, _snapshot, \
    _step_records, damage, run_all


# ---------------------------------------------------------------------------------------------
# bad input, as a user meets it


def _unreadable_file(directory: pathlib.Path) -> pathlib.Path:
    """A file that exists and is not empty by its size, but cannot be opened for reading. As
    root, permissions do not stop reads: a write-only kernel file does (Linux)."""
    target = directory / "secret.txt"
    if os.geteuid() != 0:
        target.write_text("you cannot read this\n")
        target.chmod(0)
        return target
    kernel = pathlib.Path("/proc/sys/vm/compact_memory")  # mode 0200, even for root
    try:
        kernel.open("rb").close()
    except PermissionError:
        target.symlink_to(kernel)
        return target
    pytest.fail("no way to make an unreadable file here (root, and no write-only kernel file)")


@pytest.fixture(scope="module")
def base_run(tiny_run):
    """A finished 3-step run with its checkpoint at step 3 (shared: see conftest.tiny_run)."""
    assert _ckpt_steps(tiny_run) == [3]
    return tiny_run


def _config_cases(tmp: pathlib.Path) -> dict[str, tuple[list[str], list[str]]]:
    """Config errors: name -> (arguments after --workdir, strings the error line holds)."""
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    missing_cfg = tmp / "missing_config.yaml"
    date_yaml = tmp / "date.yaml"
    date_yaml.write_text("train:\n  seed: 2024-01-01\n")
    list_section = tmp / "list_section.yaml"
    list_section.write_text("model: [1, 2]\n")
    return {
        "unknown_key": (TINY + ["train.foo=1"], ["train.foo"]),
        "wrong_type": (TINY + ["train.batch_size=four"], ["train.batch_size"]),
        "impossible_shape": (TINY + ["model.n_heads=3"], ["model.d_model", "model.n_heads"]),
        "seq_len_too_long": (TINY + ["data.seq_len=33"], ["data.seq_len", "model.max_seq_len"]),
        "empty_corpus_key": (TINY + ["data.corpus=''"], ["data.corpus", "empty"]),
        "missing_config": (["--config", str(missing_cfg)] + TINY, [str(missing_cfg)]),
        "invalid_yaml": (["--config", str(bad_yaml)] + TINY, [str(bad_yaml)]),
        "no_equals": (TINY + ["model.d_model"], ["model.d_model"]),
        "yaml_date": (["--config", str(date_yaml)] + TINY, ["train.seed", str(date_yaml)]),
        "unclosed_list": (TINY + ["model.foo=[1,2"], ["'model.foo=[1,2'"]),
        "section_as_list": (["--config", str(list_section)] + TINY,
                            ["config key 'model'", str(list_section)]),
    }


CONFIG_ERRORS = ["unknown_key", "wrong_type", "impossible_shape", "seq_len_too_long",
                 "empty_corpus_key", "missing_config", "invalid_yaml", "no_equals", "yaml_date",
                 "unclosed_list", "section_as_list"]


@pytest.mark.parametrize("name", CONFIG_ERRORS)
def test_config_error_one_line_and_nothing_written(name, base_run, tmp_path, capsys):
    """Exit 2 with one line naming the key (or file), on a new run directory (not created) and
    on an existing run (left byte for byte as it was)."""
    args, must = _config_cases(tmp_path)[name]
    fresh = tmp_path / "fresh"
    before = _snapshot(base_run)
    for workdir in (fresh, base_run):
        code, out, err = _main(capsys, "--workdir", str(workdir), *args)
        assert code == 2, (code, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("jaxlm: error: "), err[-3000:]
        for s in must:
            assert s in lines[0], (s, lines[0])
    assert not fresh.exists(), f"{name}: {fresh} was created for a run that cannot start"
    assert _snapshot(base_run) == before


def _cases(base: pathlib.Path, tmp: pathlib.Path) -> dict:
    """name -> (argv, exit code, strings the error line holds, directory that must not change,
    shell prefix)."""
    on = ["--workdir", str(base), *TINY, "train.steps=3"]  # the existing run
    fresh = lambda name: ["--workdir", str(tmp / name), *TINY, "train.steps=3"]  # noqa: E731
    empty = tmp / "empty_corpus"
    empty.mkdir()
    (empty / "a.txt").write_bytes(b"")
    unreadable = tmp / "unreadable_corpus"
    unreadable.mkdir()
    (unreadable / "fine.txt").write_text("some text\n" * 50)
    secret = _unreadable_file(unreadable)
    blocker = tmp / "a_regular_file"
    blocker.write_text("not a directory\n")
    undecodable = tmp / "undecodable_corpus"
    undecodable.mkdir()
    for i in range(6):
        (undecodable / f"d{i}.txt").write_bytes(
            b"caf\xc3\xa9 ok \xff\xfe bad \xe6\x97 cut \x80\x81 text\n" * 40 + b"\xf0\x9f")
    damaged = tmp / "damaged"
    shutil.copytree(base, damaged)
    damage(damaged / "checkpoints" / "3", "truncate")
    full = tmp / "disk_full"
    shutil.copytree(base, full)
    # metrics.jsonl a little under the 64 KiB a file may have: a record soon does not fit
    metrics_full = tmp / "metrics_disk_full"
    shutil.copytree(base, metrics_full)
    with (metrics_full / "metrics.jsonl").open("a") as f:
        while f.tell() < 63 * 1024:
            f.write('{"event": "padding", "note": "%s"}\n' % ("x" * 200))
    damaged_metrics = tmp / "damaged_metrics"
    shutil.copytree(base, damaged_metrics)
    with (damaged_metrics / "metrics.jsonl").open("ab") as f:
        f.write(b'{"event": "note", "text": "caf\xe9"}\n{"step": 3, "lo')  # not UTF-8; cut short
    bad_jsonl = tmp / "records.jsonl"
    bad_jsonl.write_text('{"text": "a record"}\n{"text": "another"}\n{"body": "no text"}\n')
    binary_csv = tmp / "runs_binary.csv"
    binary_csv.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    gpt2 = ["--config", str(REPO_ROOT / "configs" / "gpt2_small.yaml"), "--workdir",
            str(tmp / "gpt2"), "train.steps=3", "optim.warmup_steps=1",
            f"data.tfds_data_dir={tmp / 'no_tfds'}"]  # never the machine's own tfds data
    return {
        # against an existing run: nothing in it may change. A config error as a process (the
        # others are tested in-process above).
        "config_error": (on + ["train.foo=1"], 2, ["train.foo"], base, None),
        "missing_corpus": (on + [f"data.corpus={tmp / 'nowhere'}"], 2, [str(tmp / "nowhere")],
                           base, None),
        "empty_corpus": (fresh("e1") + [f"data.corpus={empty}"], 2, [str(empty), "empty"],
                         None, None),
        "unreadable_corpus": (fresh("e2") + [f"data.corpus={unreadable}"], 2,
                              ["cannot read", str(secret)], None, None),
        "changed_shape": (on + ["model.n_layers=2"], 2, ["model.n_layers", str(base)], base,
                          None),
        "changed_tokenizer": (on + ["data.tokenizer=sentencepiece", "data.sp_vocab_size=300"], 2,
                              ["data.tokenizer", str(base)], base, None),
        "workdir_not_writable": (["--workdir", str(blocker / "run"), *TINY], 2,
                                 ["not writable", str(blocker / "run")], None, None),
        "all_checkpoints_damaged": (["--workdir", str(damaged), *TINY, "train.steps=3"], 2,
                                    ["no checkpoint in", "can be restored",
                                     str(damaged / "checkpoints" / "3")], damaged, None),
        "nan_halt": (fresh("e3") + ["train.debug_nan_steps=[2]", "train.nonfinite=halt"], 3,
                     ["non-finite loss or gradient norm at step 2", "halting"], None, None),
        # at most 64 KiB per file: the new checkpoint's data file does not fit
        "disk_full": (["--workdir", str(full), *TINY, "train.steps=6"], 2,
                      ["could not write checkpoint", str(full / "checkpoints" / "6"),
                       "File too large", f"previous checkpoint {full / 'checkpoints' / '3'} "
                       "is intact"], None,
                      # no compilation cache (neither the suite's nor jaxlm's default in the
                      # user's cache folder): its entries would be cut at 64 KiB too
                      "unset JAX_COMPILATION_CACHE_DIR; export JAXLM_COMPILATION_CACHE=0; ulimit -f 64; "),
        # metrics.jsonl cannot grow: one line naming it, no half-written record (see below)
        "metrics_disk_full": (["--workdir", str(metrics_full), *TINY, "train.steps=6"], 2,
                              ["could not write", str(metrics_full / "metrics.jsonl"),
                               "File too large", "checkpoints are intact"],
                              metrics_full / "checkpoints" / "3",
                              "unset JAX_COMPILATION_CACHE_DIR; export JAXLM_COMPILATION_CACHE=0; ulimit -f 64; "),
        "damaged_metrics": (["--workdir", str(damaged_metrics), *TINY, "train.steps=3"], 0, [],
                            None, None),
        "undecodable_text": (fresh("e4") + [f"data.corpus={undecodable}",
                                            f"data.cache_dir={tmp / 'cache'}"], 0, [], None, None),
        "jsonl_missing_field": (fresh("e5") + [f"data.corpus={bad_jsonl}",
                                               f"data.cache_dir={tmp / 'cache'}"], 2,
                                [f"{bad_jsonl}:3", "no field 'text'", "data.text_key"], None,
                                None),
        # the shipped accelerator config on a machine without lm1b: how to prepare it, no
        # KeyError traceback, nothing downloaded
        "unprepared_tfds": (gpt2, 2, ["tfds dataset 'lm1b' is not prepared",
                                      "tfds build lm1b --file_format=array_record"], None, None),
        "fit_binary_csv": (["fit", "--input", str(binary_csv), "--output", str(tmp / "fit")], 2,
                           [str(binary_csv), "not a UTF-8 text CSV file"], None, None),
    }


@pytest.fixture(scope="module")
def bad_input(base_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    cases = _cases(base_run, tmp)
    full = tmp / "disk_full" / "checkpoints" / "3"
    before = {name: _snapshot(keep) for name, (_, _, _, keep, _) in cases.items() if keep}
    before["disk_full"] = _snapshot(full)
    procs = {}
    for name, (argv, _, _, _, shell) in cases.items():
        cmd = _cmd(*argv)
        if shell:
            cmd = ["bash", "-c", shell + 'exec "$@"', "bash", *cmd]
        procs[name] = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=600)
        results[name] = (p.returncode, out, err)
    after = {name: _snapshot(keep) for name, (_, _, _, keep, _) in cases.items() if keep}
    after["disk_full"] = _snapshot(full)
    return cases, results, before, after, tmp


BAD = ["config_error", "missing_corpus", "empty_corpus", "unreadable_corpus", "changed_shape",
       "changed_tokenizer", "workdir_not_writable", "all_checkpoints_damaged", "nan_halt",
       "disk_full", "metrics_disk_full", "jsonl_missing_field", "unprepared_tfds",
       "fit_binary_csv"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_one_line_and_nothing_touched(name, bad_input):
    cases, results, before, after, _ = bad_input
    code, out, err = results[name]
    _, want_code, must, keep, _ = cases[name]
    assert code == want_code, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("jaxlm: error:")]
    assert len(ours) == 1, err[-3000:]
    for s in must:
        assert s in ours[0], (s, ours[0])
    if name in before:
        changed = sorted(set(before[name]) ^ set(after[name])) or \
            [k for k in before[name] if before[name][k] != after[name][k]]
        assert not changed, f"{name} changed {changed}"


def test_config_error_process_prints_only_its_line(bad_input):
    """`python train.py` with a bad key: exit 2, and stderr is the error line and nothing else
    (no traceback, no warnings, no JAX start-up chatter)."""
    _, results, *_ = bad_input
    code, out, err = results["config_error"]
    assert code == 2, err[-3000:]
    assert len(err.splitlines()) == 1 and err.startswith("jaxlm: error: "), err[-3000:]
    assert out == ""


def test_workdir_under_a_file_is_left_alone(bad_input):
    *_, tmp = bad_input
    assert (tmp / "a_regular_file").read_text() == "not a directory\n"


def test_undecodable_bytes_are_replaced_not_fatal(bad_input):
    cases, results, *_ = bad_input
    code, out, err = results["undecodable_text"]
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "finished step 3" in out
    workdir = pathlib.Path(cases["undecodable_text"][0][1])
    assert all(math.isfinite(r["loss"]) for r in _step_records(workdir))


def test_disk_full_then_resume(bad_input):
    """The failed save left checkpoint 3 as it was; with space again the same command resumes
    from it and finishes."""
    cases, results, *_ , tmp = bad_input
    workdir = tmp / "disk_full"
    assert 6 not in _ckpt_steps(workdir) and 3 in _ckpt_steps(workdir)
    result = train(load_config(None, [*TINY, "train.steps=6"]), workdir, quiet=True)
    assert result.final_step == 6
    assert _ckpt_steps(workdir) == [3, 6]
    assert [r["start_step"] for r in _records(workdir) if r.get("event") == "start"][-1] == 3
    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_metrics_disk_full_leaves_whole_records_then_resumes(bad_input):
    """A full disk while appending to metrics.jsonl was a 65-line traceback, exit 1 and a
    half-written record. Now every line is a whole record, and with space again the same
    command resumes from checkpoint 3."""
    *_, tmp = bad_input
    workdir = tmp / "metrics_disk_full"
    lines = (workdir / "metrics.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    assert all(isinstance(json.loads(line), dict) for line in lines[:-1])
    assert _ckpt_steps(workdir) == [3]
    result = train(load_config(None, [*TINY, "train.steps=6"]), workdir, quiet=True)
    assert result.final_step == 6
    steps = [r["step"] for r in _step_records(workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_damaged_metrics_on_resume_is_a_warning(bad_input):
    """Invalid UTF-8 in metrics.jsonl was a UnicodeDecodeError traceback on resume."""
    cases, results, *_, tmp = bad_input
    code, out, err = results["damaged_metrics"]
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    workdir = tmp / "damaged_metrics"
    warning = [line for line in err.splitlines() if "damaged line" in line]
    assert len(warning) == 1 and "dropped 2 damaged line(s)" in warning[0], err[-3000:]
    assert str(workdir / "metrics.jsonl") in warning[0]
    assert [r.get("event") for r in _records(workdir)][-1] == "final"

# ---------------------------------------------------------------------------------------------
# too big to fit: refused before anything big is allocated, in seconds (issue 21.9)


def test_too_big_to_fit_is_refused_in_seconds(tmp_path):
    """A 155-billion-parameter model (its state alone is terabytes) and a 4-million-row batch
    (XLA's memory analysis of the compiled step: hundreds of GiB of activations): one line with
    the numbers and what to reduce, exit 2, before any step runs."""
    cases = {
        "huge_model": (["model.d_model=16384", "model.n_layers=48", "model.n_heads=128"],
                       ["the train state (154,", "parameters", "TiB per device, more than",
                        "model.d_model"]),
        "huge_batch": (["train.batch_size=4000000"],
                       ["one train step", "GiB per device, more than", "train.batch_size"]),
    }
    t0 = time.monotonic()
    procs = run_all([_cmd("--workdir", str(tmp_path / name), *TINY, *extra)
                     for name, (extra, _) in cases.items()], env=_env(), timeout=600)
    elapsed = time.monotonic() - t0
    for (name, (_, must)), proc in zip(cases.items(), procs):
        assert proc.returncode == 2, (name, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        ours = [line for line in proc.stderr.splitlines() if line.startswith("jaxlm: error:")]
        assert len(ours) == 1, proc.stderr[-3000:]
        for s in must:
            assert s in ours[0], (name, s, ours[0])
        assert not (tmp_path / name / "checkpoints").exists() or \
            not any((tmp_path / name / "checkpoints").iterdir())
    assert elapsed < 180, f"took {elapsed:.0f} s"  # start-up and one compile, not minutes
