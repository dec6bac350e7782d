"""Installing and importing jaxlm: its requirements never force a JAX downgrade (Colab, TPU-VM
and GPU images ship a JAX matched to their accelerator), the environment this suite runs in
satisfies them with nothing to change (CI runs this in a lower-bound env and a newest-JAX env),
and heavy optional dependencies load only where they are used."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from helpers import REPO_ROOT

JAX_STACK = ("jax", "flax", "optax", "orbax-checkpoint", "grain")
HEAVY = ("grain", "tensorflow_datasets", "array_record", "sentencepiece", "tensorboardX",
         "omegaconf", "datasets")


def _core_requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in metadata.requires("jaxlm") or []]
    return [r for r in reqs if r.marker is None or "extra" not in str(r.marker)]


def test_no_upper_bound_on_the_jax_stack():
    reqs = {r.name: r for r in _core_requirements()}
    for name in JAX_STACK:
        assert name in reqs, f"{name} is not a requirement"
        ops = {s.operator for s in reqs[name].specifier}
        assert ops <= {">=", ">", "!="}, (
            f"{reqs[name]}: an upper bound or pin would make pip downgrade a runtime's JAX stack")


def test_this_environment_satisfies_jaxlm_with_nothing_to_change(tmp_path):
    """pip resolves jaxlm's requirements against the installed packages, offline (--no-index):
    a requirement the environment does not meet fails to resolve; one it meets is left alone."""
    report = tmp_path / "report.json"
    reqs = [str(r) for r in _core_requirements()]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                           "--quiet", "--report", str(report), *reqs],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]
    changes = [i["metadata"]["name"] + " " + i["metadata"]["version"]
               for i in json.loads(report.read_text())["install"]]
    assert changes == [], f"pip would install or replace: {changes}"


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_model_and_train_step_need_no_heavy_dependency():
    """Build a model from the dataclass config and run one sharded train step on in-memory
    data: none of Grain, tfds, array-record, SentencePiece, tensorboardX, OmegaConf loads."""
    got = _run(f"""
        import json, sys
        import numpy as np
        import jaxlm
        from jaxlm import sharding
        from jaxlm.config import ModelConfig, RunConfig
        from jaxlm.train.optim import build_optimizer, schedule
        from jaxlm.train.state import init_state, state_shardings
        from jaxlm.train.step import compile_steps
        cfg = RunConfig(model=ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2,
                                          max_seq_len=16))
        model = jaxlm.build_model(cfg.model)
        mesh = sharding.make_mesh(cfg.mesh)
        opt, lr = build_optimizer(cfg.optim, 10), schedule(cfg.optim, 10)
        _, shardings = state_shardings(model, opt, 16, mesh)
        step, _ = compile_steps(model, opt, lr, shardings, mesh)
        state, _ = init_state(model, opt, seed=0, seq_len=16, mesh=mesh)
        ids = np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32)
        batch = {{"inputs": ids[:, :-1], "targets": ids[:, 1:], "mask": np.ones((2, 16), bool)}}
        state, metrics = step(state, batch)
        print(json.dumps({{"loss": float(metrics["loss"]),
                          "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert got["heavy"] == [] and got["loss"] > 0


def test_import_jaxlm_and_the_fitter_load_no_training_stack():
    got = _run("""
        import json, sys
        import jaxlm
        after_jaxlm = [m for m in ("jax", "flax", "orbax", "grain") if m in sys.modules]
        import jaxlm.scaling.fit
        print(json.dumps({"jaxlm": after_jaxlm, "fit": [m for m in (
            "jax", "flax", "optax", "orbax", "grain", "tensorflow_datasets") if m in sys.modules]}))
    """)
    assert got == {"jaxlm": [], "fit": []}


def test_public_names_still_resolve():
    import jaxlm
    import jaxlm.train.step  # noqa: F401 - loading a submodule must not rebind jaxlm.train

    assert callable(jaxlm.train) and jaxlm.train.__module__ == "jaxlm.train.loop"
    for name in jaxlm.__all__:
        assert getattr(jaxlm, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxlm.nope  # noqa: B018
    assert re.match(r"\d+\.\d+", jaxlm.__version__)


def _extras() -> dict[str, list[Requirement]]:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {name: [Requirement(r) for r in reqs]
            for name, reqs in project["optional-dependencies"].items()}


def test_readmes_tensorboard_command_is_satisfiable():
    """README says to view runs with `tensorboard --logdir`; jaxlm writes the event files with
    tensorboardX and does not need TensorBoard itself, so README must name the pip command that
    installs it: an extra of pyproject.toml that requires `tensorboard` (the test extra has it
    too, for the test below)."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "tensorboard --logdir" in readme
    providing = {name for name, reqs in _extras().items()
                 if any(r.name == "tensorboard" for r in reqs)}
    assert {"tensorboard", "test"} <= providing, f"extras requiring tensorboard: {providing}"
    named = set(re.findall(r'pip install -e "\.\[([\w,-]+)\]"', readme))
    assert "tensorboard" in named, \
        f'README names the extras {sorted(named)} but not pip install -e ".[tensorboard]"'


def test_tensorboard_reads_the_event_files_jaxlm_writes(tmp_path):
    """With the tensorboard extra installed (the test extra includes it): TensorBoard's own
    loader reads the scalars a run's MetricsWriter wrote, under README's tag names."""
    pytest.importorskip("tensorboard", reason='needs pip install -e ".[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jaxlm.train.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path)
    writer.write({"step": 1, "loss": 2.5, "tokens_per_sec": 100.0})
    writer.write({"step": 2, "loss": 2.0, "eval_loss": 2.25})
    writer.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "perf/tokens_per_sec", "eval/loss"}
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.5), (2, 2.0)]
    cli = pathlib.Path(sys.executable).parent / "tensorboard"  # the command README gives
    proc = subprocess.run([str(cli), "--inspect", "--logdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train/loss" in proc.stdout, proc.stderr[-2000:]
