"""`jaxlm generate`: sample text from a run directory or a Hugging Face GPT-2 folder
(jaxlm.text_generation.TextGenerator)."""

from __future__ import annotations

import argparse

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError

NAME = "generate"

EPILOG = """\
examples:
  jaxlm generate --workdir runs/quickstart --prompt "def " --max-new-tokens 200
  jaxlm generate --workdir runs/quickstart --prompt "import " --num-return-sequences 3 \\
      --temperature 0.8 --top-p 0.95 --seed 1
  jaxlm generate --workdir runs/quickstart --prompt "class " --temperature 0   # greedy
  jaxlm generate --workdir ~/models/gpt2 --prompt "Hello" --temperature 0 \
      --repetition-penalty 1.3 --stop "."          # a Hugging Face folder with its tokenizer

The newest checkpoint of the run is used (or --step); for a directory made by `jaxlm convert`,
its imported weights. The same --seed gives the same samples.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(NAME, help="sample text from a trained run", epilog=EPILOG,
                       description="Generate text from a run directory's newest checkpoint "
                       "(KV-cache decoding, compiled).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--workdir", required=True,
                   help="the run directory (or a Hugging Face GPT-2 folder with its tokenizer)")
    g.add_argument("--prompt", default="", help="text to continue (default: empty, i.e. start "
                   "a new document)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate per sample (default: 100, or what fits the context)")
    g.add_argument("--num-return-sequences", type=int, default=1, help="samples (default 1)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature; 0 = greedy (default 1.0)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    g.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus sampling: keep the most likely tokens up to this mass (1: off)")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already in the text (Hugging Face's; 1: off)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end a sample after the token that completes TEXT (repeatable)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="do not stop a sample at the end-of-document token")
    g.set_defaults(func=run)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise JaxlmError(msg)


def run(args: argparse.Namespace) -> Status:
    _check(args.max_new_tokens is None or args.max_new_tokens >= 1,
           f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
    _check(args.num_return_sequences >= 1,
           f"--num-return-sequences must be >= 1; got {args.num_return_sequences}")
    _check(args.temperature >= 0,
           f"--temperature must be >= 0 (0 is greedy); got {args.temperature}")
    _check(args.top_k >= 0, f"--top-k must be >= 0 (0 disables it); got {args.top_k}")
    _check(0 < args.top_p <= 1, f"--top-p must be in (0, 1] (1 disables it); got {args.top_p}")
    _check(args.repetition_penalty > 0,
           f"--repetition-penalty must be > 0 (1 disables it); got {args.repetition_penalty}")
    _check(all(args.stop), "--stop must not be empty")
    from jaxlm.cli.process import quiet_checkpoints
    from jaxlm.text_generation import TextGenerator

    quiet_checkpoints()

    gen = TextGenerator.from_pretrained(args.workdir, step=args.step)
    max_new = args.max_new_tokens
    if max_new is None:  # 100, or what fits a Transformer's context after the prompt
        max_new = 100
        if gen.config.family == "transformer":
            prompt_len = len(gen.prompt_ids(args.prompt))
            max_new = max(1, min(max_new, gen.config.max_seq_len - prompt_len))
    records = gen(args.prompt, max_new_tokens=max_new, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p,
                  num_return_sequences=args.num_return_sequences,
                  repetition_penalty=args.repetition_penalty, stop_strings=args.stop,
                  seed=args.seed, stop_at_eos=not args.ignore_eos)
    for i, rec in enumerate(records):
        print(f"--- sample {i + 1} ---\n{rec['generated_text']}")
    return Status.OK
