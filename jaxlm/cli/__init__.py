"""The `jaxlm` command line (also `python train.py`, `python -m jaxlm`, `python -m jaxlm.cli`).

One module per command (train, generate, convert, eval, fit, sweep) adds its subparser, checks
its arguments and calls the library. Every exit status is decided here, in `main`:

  0   finished (and --help)
  1   `jaxlm sweep`: some member failed (its row in runs.csv says why)
  2   bad input: a JaxlmError, reported as one line `jaxlm: error: ...` on stderr. argparse's own
      usage errors exit 2 too (SystemExit from parse_args: usage + one error line)
  3   halted on a non-finite loss (NonFiniteError: train.nonfinite=halt, or
      train.nonfinite_patience consecutive skipped updates), reported the same way
  4   `jaxlm fit --strict`: the fit has warning-level diagnostics (numbers the runs do not
      identify); its outputs are written and stderr has one line per diagnostic
  75  stopped by SIGTERM/SIGINT after saving a checkpoint (EX_TEMPFAIL): re-run to resume
  130 interrupted (KeyboardInterrupt: a second signal, or Ctrl-C outside the training loop)
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from jaxlm import xla_flags
from jaxlm.cli import convert, eval as eval_cmd, fit, generate, plan, sweep, train
from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError, NonFiniteError
from jaxlm.train.preemption import EXIT_PREEMPTED

COMMANDS = (train, generate, convert, eval_cmd, fit, sweep, plan)  # in `jaxlm --help` order
DEFAULT_COMMAND = train.NAME
COMPILING = (train.NAME, generate.NAME, eval_cmd.NAME, sweep.NAME, plan.NAME)  # persistent compile cache on

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_FLAGGED = 4
EXIT_INTERRUPTED = 130
EXIT_STATUS = {Status.OK: EXIT_OK, Status.FAILED: EXIT_FAILED, Status.PREEMPTED: EXIT_PREEMPTED,
               Status.FLAGGED: EXIT_FLAGGED}


def _version() -> str:
    """'jaxlm X (jax Y, flax Z, Python P)', read from the installed metadata (imports no JAX)."""
    from importlib import metadata

    from jaxlm.version import __version__

    deps = []
    for name in ("jax", "flax"):
        try:
            deps.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            deps.append(f"{name} not installed")
    return f"jaxlm {__version__} ({', '.join(deps)}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxlm", description="Train and study language models with JAX and Flax. "
        "`jaxlm COMMAND --help` explains each command; with no command, jaxlm trains.",
        epilog=train.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*(c.NAME for c in COMMANDS), "-h", "--help", "-V",
                                   "--version"):
        argv = [DEFAULT_COMMAND, *argv]  # `python train.py key=value` is `jaxlm train key=value`
    args = build_parser().parse_args(argv)  # usage errors: SystemExit(2); --help: SystemExit(0)
    # a jaxlm command owns its process: before JAX's backends start (`train` adds the CPU split
    # for a Transformer itself, once it has read the config)
    xla_flags.apply_defaults()
    from jaxlm.cli.process import compilation_cache, keep_freed_memory

    keep_freed_memory()  # XLA:CPU's per-step buffers reused, not page-faulted in every step
    if args.command in COMPILING:
        compilation_cache()
    try:
        status = args.func(args)
    except JaxlmError as e:
        print(f"jaxlm: error: {e}", file=sys.stderr)
        return EXIT_NONFINITE if isinstance(e, NonFiniteError) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("jaxlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_STATUS[status]
