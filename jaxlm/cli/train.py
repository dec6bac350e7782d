"""`jaxlm train` (the default command; `python train.py` is the same): train a model from a
config and dotted overrides (jaxlm.train.loop.train), then print a summary."""

from __future__ import annotations

import argparse
import pathlib

from jaxlm.cli.status import Status

NAME = "train"

EPILOG = """\
overrides:
  Any config key can be set after the options as dotted key=value pairs, e.g.
    python train.py model.n_layers=6 optim.lr=3e-4 data.corpus=tfds:lm1b
  Unknown keys and values of the wrong type are errors that name the key.

examples:
  python train.py                                   # quickstart: small GPT on the stdlib corpus
  python train.py --config configs/lstm_small.yaml  # LSTM language model
  python train.py --workdir runs/exp1 train.steps=5000 data.corpus=~/texts/
  Re-running a command on an existing --workdir resumes from its newest checkpoint.

config:
  Sections model.*, data.*, optim.*, train.*, mesh.*, distributed.*. Every key with its default
  and meaning: docs/config.md. The resolved config of a command: add --print-config.
  Each run logs tokens/s, step time and MFU (model FLOPs utilization) to metrics.jsonl and
  TensorBoard (tensorboard --logdir <workdir>; the viewer: pip install -e ".[tensorboard]").

exit status:
  0 finished; 2 bad input (one line on stderr); 3 halted on a non-finite loss
  (train.nonfinite=halt, or train.nonfinite_patience consecutive skipped updates); 75 stopped by
  SIGTERM/SIGINT after saving a checkpoint: re-run to resume.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (default: the built-in quickstart config)")
    p.add_argument("--workdir", help="run directory (default: runs/<config name>); an existing "
                   "one is resumed")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="train a model (default command)", epilog=EPILOG,
        description="Train a language model; resumes when --workdir already holds a run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> Status:
    from jaxlm.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return Status.OK
    from jaxlm.cli.process import quiet_checkpoints
    from jaxlm.train.loop import train

    quiet_checkpoints()

    name = pathlib.Path(args.config).stem if args.config else "quickstart"
    workdir = args.workdir or str(pathlib.Path("runs") / name)
    result = train(cfg, workdir, quiet=args.quiet)
    if result.preempted:  # checkpointed and stopped by SIGTERM/SIGINT; the loop said how to resume
        return Status.PREEMPTED
    import jax  # after train(): it initializes jax.distributed before any device is touched

    if jax.process_index() == 0:  # multi-host: one summary, from process 0
        _print_summary(cfg, result)
    return Status.OK


def _print_summary(cfg, result) -> None:
    from jaxlm.evaluate import baseline_note, coverage_text

    e = result.eval
    target = "label" if cfg.model.objective == "classify" else "token"
    baseline = (f" (always guessing the commonest {target}: {e['eval_accuracy_baseline']:.4f})"
                if "eval_accuracy_baseline" in e else "")
    if cfg.model.objective == "classify":
        summary = (f"eval loss {e['eval_loss']:.4f}, accuracy {e['eval_accuracy']:.4f}{baseline}, "
                   f"macro F1 {e['eval_f1']:.4f}")
    else:
        summary = (f"eval loss {e['eval_loss']:.4f}, perplexity {e['eval_perplexity']:.2f}, "
                   + (f"masked-token accuracy {e['eval_accuracy']:.4f}{baseline}"
                      if cfg.model.objective == "mlm" else f"bits per byte {e['eval_bpb']:.4f}"))
    summary += f" (over {coverage_text(e)})"
    if result.final_step == result.start_step:  # nothing to train: no throughput to report
        print(f"\nthe run is already finished at step {result.final_step} "
              f"(train.steps={cfg.train.steps}); evaluated again: {summary}")
    else:
        roof = (f" of {result.peak_flops / 1e12:.3g} TFLOP/s, {result.peak_flops_source}"
                if result.peak_flops else "")
        print(f"\nfinished step {result.final_step} in {result.wall_time:.0f}s "
              f"({result.tokens_per_sec:,.0f} tokens/s, MFU {100 * result.mfu:.1f}%{roof}): "
              f"{summary}")
    if cfg.model.objective != "clm" and (note := baseline_note(e)):
        print(note)
    for i, s in enumerate(result.samples):
        print(f"\n--- sample {i + 1} ---\n{s}")
    print(f"\nrun directory: {result.workdir}")
