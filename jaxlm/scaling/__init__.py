"""Scaling studies: fit scaling laws (fit: pure math), say which fitted numbers the runs do not
identify (diagnostics), plot them (plots) and report them (report: runs.csv in, fit.json /
report.md / PNGs out)."""

from jaxlm.scaling import fit
from jaxlm.scaling.diagnostics import Diagnostic, diagnose
from jaxlm.scaling.fit import fit_all, fit_approach2, fit_approach3, fit_power_law, predict
from jaxlm.scaling.report import read_runs

__all__ = ["fit", "fit_all", "fit_approach2", "fit_approach3", "fit_power_law", "predict",
           "read_runs", "diagnose", "Diagnostic"]
