"""`jaxlm eval --workdir DIR`: a run's eval metrics (jaxlm.eval_run.evaluate_run)."""

from __future__ import annotations

import argparse
import json

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError

NAME = "eval"


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        NAME, help="evaluate a run's checkpoint on its eval split",
        description="Evaluate a run directory's newest checkpoint (or --step) on its eval split: "
        "loss, perplexity, bits per byte and accuracy for language models (masked-token for "
        "model.objective=mlm); accuracy and macro precision/recall/F1 for classifiers.")
    e.add_argument("--workdir", required=True, help="the run directory")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    e.add_argument("--max-batches", type=int, default=0,
                   help="evaluate only the first N batches (default 0: the whole eval split)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> Status:
    if args.max_batches < 0:
        raise JaxlmError(f"--max-batches must be >= 0; got {args.max_batches}")
    from jaxlm.cli.process import quiet_checkpoints
    from jaxlm.eval_run import evaluate_run
    from jaxlm.evaluate import baseline_note, coverage_text

    quiet_checkpoints()
    out = evaluate_run(args.workdir, step=args.step, max_batches=args.max_batches,
                       show_progress=not args.quiet)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        print(f"measured over: {coverage_text(out)}")
        if note := baseline_note(out):
            print(note)
    return Status.OK
