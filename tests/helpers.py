"""What several test modules share: the repository root, command lines and their environment,
the tiny model every run test uses (TINY), reading a run directory, and the in-process runs,
state restores and checkpoint damage of the resume and fault tests. Importable as `helpers`
(pyproject.toml puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import hashlib
import pathlib
import re
import subprocess
import sys
from typing import Optional, Sequence

import jax
import numpy as np
import yaml

from jaxlm import sharding
from jaxlm.checkpoint import Checkpointer
from jaxlm.config import from_dict, load_config
from jaxlm.models import build_model
from jaxlm.train.loop import train
from jaxlm.train.optim import build_optimizer
from jaxlm.train.state import state_shardings

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def run_all(cmds: Sequence[Sequence[str]], *, timeout: int = 300,
            env: Optional[dict] = None) -> list[subprocess.CompletedProcess]:
    """Runs independent commands at once and returns their results in order. Each of these
    processes is mostly interpreter and JAX start-up on one core: together they take about the
    time of the slowest, not the sum."""
    procs = [subprocess.Popen(list(c), cwd=REPO_ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    results = []
    for c, p in zip(cmds, procs):
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(list(c), p.returncode, out, err))
    return results


def jaxlm_cmd(*args: str) -> list[str]:
    """`python -m jaxlm.cli ARGS` (the `jaxlm` console script)."""
    return [sys.executable, "-m", "jaxlm.cli", *args]


TINY = [
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=32",
    "data.seq_len=32", "train.batch_size=4", "optim.warmup_steps=1", "train.log_every=2",
    "train.eval_every=3", "train.eval_batches=1", "train.final_eval_batches=2",
    "train.checkpoint_every=3", "train.samples=1", "train.sample_tokens=8",
]


def _env() -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), *args]


def _fail_msg(proc) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"


def _records(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]


def _step_records(workdir: pathlib.Path) -> list[dict]:
    return [r for r in _records(workdir) if "event" not in r]


def _ckpt_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _snapshot(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """`python train.py ARGS` in-process: the exit code (argparse's SystemExit included), stdout,
    stderr. Start-up is the same three lines (train.py -> jaxlm.cli.main) as in the subprocess
    runs above."""
    from jaxlm import cli

    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# every step logged; dropout on, so the RNG must resume too; checkpoints at 3 and 6
EXACT = TINY + ["train.steps=8", "train.log_every=1", "train.checkpoint_every=3",
                "model.dropout=0.1", "train.samples=0", "train.final_eval_batches=1"]


def run(workdir: pathlib.Path, *overrides: str, base=EXACT):
    return train(load_config(None, [*base, *overrides]), workdir, quiet=True)


def losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> loss of every step record; fails on a duplicated step."""
    steps = [r["step"] for r in _step_records(workdir)]
    assert len(steps) == len(set(steps)), f"duplicated steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in _step_records(workdir)}


def bits(tree) -> list[str]:
    """Per leaf, a digest of its dtype, shape and bytes: equal iff the trees are bitwise equal,
    and short enough that pytest's diff of two unequal lists is instant (raw bytes took
    minutes)."""
    out = []
    for x in jax.tree.leaves(tree):
        a = np.asarray(x)
        out.append(f"{a.dtype}{a.shape}:" + hashlib.sha256(a.tobytes()).hexdigest()[:16])
    return out


def restore_state(workdir: pathlib.Path, step: int):
    """The whole train state of checkpoint `step` of a run directory (verified)."""
    cfg = from_dict(yaml.safe_load((workdir / "config.yaml").read_text()))
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optim, cfg.train.steps)
    abstract, shardings = state_shardings(model, optimizer, cfg.data.seq_len,
                                          sharding.make_mesh(cfg.mesh))
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        return ckpt.restore(step, abstract, shardings)
    finally:
        ckpt.close()


def _biggest_file(step_dir: pathlib.Path) -> pathlib.Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def damage(step_dir: pathlib.Path, how: str) -> pathlib.Path:
    """Damages a checkpoint as a crash, a full disk or bit rot would; returns the file hit."""
    if how == "truncate":
        f = _biggest_file(step_dir)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "delete":
        f = step_dir / "state" / "manifest.ocdbt"
        f.unlink()
    elif how == "garbage":  # restores without any error from Orbax: only the fingerprint sees it
        f = _biggest_file(step_dir)
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
        f.write_bytes(bytes(data))
    elif how == "garbage_json":  # the data-iterator position
        f = step_dir / "data" / "metadata"
        f.write_bytes(b"\x00{not json" + f.read_bytes()[10:])
    elif how == "position":  # one number of the data-iterator position, still valid JSON
        f = step_dir / "data" / "metadata"
        text = f.read_text()
        last = list(re.finditer(r"\d+", text))[-1]
        f.write_text(text[:last.start()] + str(int(last.group()) + 1) + text[last.end():])
    else:
        raise ValueError(how)
    return f


def tensorboard_tags(logdir) -> set[str]:
    """Scalar tags in the TFRecord event files (length, crc, event proto, crc per record)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in logdir.glob("events.out.tfevents*"):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
    return tags


def keyword_rows(n: int, seed: int = 0) -> list[dict]:
    """README's keyword task (docs/examples/keyword_data.py): label 1 iff the text contains
    'zebra'; the example script is the one source of these rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "keyword_data", REPO_ROOT / "docs" / "examples" / "keyword_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.keyword_rows(n, seed)
