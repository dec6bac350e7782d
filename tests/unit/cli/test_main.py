"""jaxlm.cli: the version flag (from installed metadata, without starting JAX); what start-up
imports."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from helpers import REPO_ROOT


@pytest.mark.parametrize("argv", [["--version"], ["-V"]])
def test_version(argv, capsys):
    from jaxlm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("jaxlm 0.") and f"jax {metadata.version('jax')}" in out


def _python_lines(code: str) -> list[str]:
    """The stdout lines of `python -c code`, run from the repository root in a new process."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_train_py_version_imports_no_jax():
    code = ("import runpy, sys; sys.argv = ['train.py', '--version']\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('jax loaded' if 'jax' in sys.modules else 'no jax')")
    out = _python_lines(code)
    assert out[0].startswith("jaxlm ") and out[-1] == "no jax"


def test_cli_imports_no_scipy():
    """Every command's parser is built at start-up; the scaling commands' SciPy (~0.7 s of
    `python train.py`'s launch) loads only when a fit runs (jaxlm.scaling's lazy exports)."""
    code = ("import sys, jaxlm.cli, jaxlm.scaling.launch_spec\n"
            "print('scipy loaded' if 'scipy' in sys.modules else 'no scipy')\n"
            "from jaxlm.scaling import fit_power_law, fit\n"
            "print(fit_power_law.__module__, fit.__name__)")
    out = _python_lines(code)
    assert out == ["no scipy", "jaxlm.scaling.fit jaxlm.scaling.fit"]
