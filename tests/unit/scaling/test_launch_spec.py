"""The sweep spec's `launcher:` section and the `jaxlm sweep` launcher flags: bad values are one
line naming the key or flag; resources by size; Ray and submitit imported only by their
launchers, and a missing one named with the pip command."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest
# imported now, not inside a test's capsys: submitit's logger keeps the stderr it first sees
import submitit.slurm.slurm  # noqa: F401

from jaxlm import cli
from jaxlm.scaling import sweep
from jaxlm.scaling.launch_spec import resources_for
from scaling_helpers import tiny_spec


def test_launcher_section_loads_with_tiers(tmp_path):
    spec = sweep.load_spec(tiny_spec(tmp_path, launcher={
        "kind": "ray", "max_concurrent": 3, "resources": {"cpus": 2},
        "tiers": [{"min_params": 1e8, "tpus": 4, "cpus": 8}, {"min_params": 1e6, "gpus": 1}],
        "slurm": {"partition": "gpu", "additional": {"account": "lm"}}}))
    la = spec.launcher
    assert (la.kind, la.max_concurrent, la.retries, la.slurm.partition) == ("ray", 3, 2, "gpu")
    assert resources_for(la, 5e3).cpus == 2
    assert resources_for(la, 2e6).gpus == 1 and resources_for(la, 2e6).tpus == 0
    assert resources_for(la, 2e8).tpus == 4
    assert sweep.load_spec(tiny_spec(tmp_path)).launcher.kind == "local"  # the default


@pytest.mark.parametrize("launcher, match", [
    ({"kind": "k8s"}, "'launcher.kind' must be one of local, ray, slurm; got 'k8s'"),
    ({"retries": -1}, "'launcher.retries' must be >= 0"),
    ({"tiers": [{"min_params": 1e6, "gpus": -1}]}, r"'launcher.tiers\[0\].gpus' must be >= 0"),
    ({"resources": {"chips": 4}}, "unknown sweep spec key 'launcher.resources.chips'"),
    ({"slurm": {"executor": "pbs"}}, "'launcher.slurm.executor' must be one of slurm, local"),
])
def test_bad_launcher_settings_name_the_key(tmp_path, capsys, launcher, match):
    path = tiny_spec(tmp_path, launcher=launcher)
    assert cli.main(["sweep", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flags, match", [
    (["--launcher", "ray", "--num-workers", "2"], "--num-workers splits a sweep"),
    (["--retries", "-1"], "--retries must be >= 0"),
    (["--launcher", "ray"], r"--launcher ray needs the ray package: pip install 'jaxlm\[cluster\]'"),
    (["--launcher", "slurm"], "--launcher slurm needs the submitit package"),
])
def test_bad_launcher_flags_are_one_line(tmp_path, capsys, monkeypatch, flags, match):
    for name in ("ray", "submitit"):  # as if the cluster extra were not installed
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("ray_launcher", "slurm_launcher"):
        monkeypatch.delitem(sys.modules, f"jaxlm.scaling.sweep.{name}", raising=False)
    argv = ["sweep", "--config", str(tiny_spec(tmp_path)), "--workdir", str(tmp_path / "w")]
    assert cli.main(argv + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not (tmp_path / "w").exists()


def test_slurm_without_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: -1))  # no srun here
    argv = ["sweep", "--config", str(tiny_spec(tmp_path)), "--workdir", str(tmp_path / "w"),
            "--launcher", "slurm"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'Could not detect "srun"' in err[0] and "executor: local" in err[0]


def test_ray_and_submitit_are_imported_only_by_their_launchers():
    package = pathlib.Path(sweep.__file__).parents[3]
    owners = {"ray": {"jaxlm/scaling/sweep/ray_launcher.py"},
              "submitit": {"jaxlm/scaling/sweep/slurm_launcher.py"}}
    found = {"ray": set(), "submitit": set()}
    for path in package.joinpath("jaxlm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                top = n.split(".")[0]
                if top in found:
                    found[top].add(str(path.relative_to(package)))
    assert found == owners
