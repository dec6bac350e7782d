"""Scaling studies: fit scaling laws (fit: pure math), say which fitted numbers the runs do not
identify (diagnostics), plot them (plots) and report them (report: runs.csv in, fit.json /
report.md / PNGs out).

The names below load on first use (PEP 562): importing a light submodule such as
`jaxlm.scaling.launch_spec` (which every `jaxlm` command's parser reads) must not import SciPy,
which costs ~0.7 s of `python train.py`'s start-up."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # name -> the submodule that defines it
    "fit": None, "fit_all": "fit", "fit_approach2": "fit", "fit_approach3": "fit",
    "fit_power_law": "fit", "predict": "fit", "read_runs": "report",
    "diagnose": "diagnostics", "Diagnostic": "diagnostics",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxlm.scaling' has no attribute {name!r}")
    module = importlib.import_module(f"jaxlm.scaling.{_EXPORTS[name] or name}")
    value = module if _EXPORTS[name] is None else getattr(module, name)
    globals()[name] = value
    return value


__all__ = list(_EXPORTS)
