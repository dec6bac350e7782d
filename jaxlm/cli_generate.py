"""`jaxlm generate` (sample from a run directory) and `jaxlm convert` (weights in and out:
Hugging Face GPT-2 folders, PyTorch LSTM state_dicts, jaxlm run directories). Wired into
`jaxlm.cli`; every user error is a JaxlmError (one line, no traceback)."""

from __future__ import annotations

import argparse
import pathlib
import sys

from jaxlm.errors import JaxlmError

COMMANDS = ("generate", "convert")

GENERATE_EPILOG = """\
examples:
  jaxlm generate --workdir runs/quickstart --prompt "def " --max-new-tokens 200
  jaxlm generate --workdir runs/quickstart --prompt "import " --num-return-sequences 3 \\
      --temperature 0.8 --top-p 0.95 --seed 1
  jaxlm generate --workdir runs/quickstart --prompt "class " --temperature 0   # greedy

The newest checkpoint of the run is used (or --step); for a directory made by `jaxlm convert`,
its imported weights. The same --seed gives the same samples.
"""

CONVERT_EPILOG = """\
directions:
  --from-hf DIR --to-workdir DIR       a Hugging Face GPT-2 save_pretrained folder (config.json +
                                       model.safetensors or pytorch_model.bin) -> a new jaxlm
                                       run directory (config.yaml, params/, tokenizer)
  --from-torch-lstm FILE --to-workdir DIR
                                       a torch.save'd state_dict of Embedding -> LSTM -> Linear
  --from-workdir DIR --to-hf DIR       a jaxlm run (newest checkpoint, or --step) -> a folder that
                                       transformers.GPT2LMHeadModel.from_pretrained loads

examples:
  jaxlm convert --from-hf ~/models/gpt2 --to-workdir runs/gpt2
  jaxlm generate --workdir runs/gpt2 --prompt "Hello"
  python train.py --config runs/gpt2/config.yaml --workdir runs/gpt2-ft train.init_from=runs/gpt2
  jaxlm convert --from-workdir runs/quickstart --to-hf exported/quickstart

Safetensors are read and written without PyTorch; pytorch_model.bin and .pt files need it.
A converted run directory uses the byte tokenizer when the model's vocabulary holds it and the
source has no tokenizer of its own; jaxlm does not read Hugging Face tokenizer files.
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    g = sub.add_parser("generate", help="sample text from a trained run", epilog=GENERATE_EPILOG,
                       description="Generate text from a run directory's newest checkpoint "
                       "(KV-cache decoding, compiled).", formatter_class=fmt)
    g.add_argument("--workdir", required=True, help="the run directory")
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
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="do not stop a sample at the end-of-document token")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("convert", help="import/export weights (Hugging Face GPT-2, PyTorch LSTM)",
                       epilog=CONVERT_EPILOG, formatter_class=fmt,
                       description="Convert model weights between jaxlm run directories and "
                       "Hugging Face GPT-2 / PyTorch LSTM checkpoints.")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="a Hugging Face GPT-2 folder")
    src.add_argument("--from-torch-lstm", metavar="FILE", help="a PyTorch LSTM LM state_dict")
    src.add_argument("--from-workdir", metavar="DIR", help="a jaxlm run directory")
    dst = c.add_mutually_exclusive_group(required=True)
    dst.add_argument("--to-workdir", metavar="DIR", help="a new jaxlm run directory")
    dst.add_argument("--to-hf", metavar="DIR", help="a new Hugging Face GPT-2 folder")
    c.add_argument("--step", type=int, default=None, help="with --from-workdir: checkpoint step")
    c.add_argument("--scan-layers", action="store_true",
                   help="with --to-workdir: store Transformer layers stacked (model.scan_layers)")
    c.set_defaults(func=cmd_convert)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise JaxlmError(msg)


def cmd_generate(args: argparse.Namespace) -> int:
    _check(args.max_new_tokens is None or args.max_new_tokens >= 1,
           f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
    _check(args.num_return_sequences >= 1,
           f"--num-return-sequences must be >= 1; got {args.num_return_sequences}")
    _check(args.temperature >= 0, f"--temperature must be >= 0 (0 is greedy); got {args.temperature}")
    _check(args.top_k >= 0, f"--top-k must be >= 0 (0 disables it); got {args.top_k}")
    _check(0 < args.top_p <= 1, f"--top-p must be in (0, 1] (1 disables it); got {args.top_p}")
    from jaxlm.generate import TextGenerator

    gen = TextGenerator.from_workdir(args.workdir, step=args.step)
    max_new = args.max_new_tokens
    if max_new is None:
        max_new = 100
        if gen.config.family == "transformer":
            prompt_len = max(len(gen.tokenizer.encode(args.prompt)), 1)
            max_new = max(1, min(max_new, gen.config.max_seq_len - prompt_len))
    texts = gen(args.prompt, max_new_tokens=max_new, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, num_return_sequences=args.num_return_sequences,
                seed=args.seed, stop_at_eos=not args.ignore_eos)
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}")
    return 0


def _empty_target(path: str) -> None:
    p = pathlib.Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise JaxlmError(f"{p} already exists and is not empty: choose a new directory")


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxlm import interop

    if args.to_hf:
        _check(bool(args.from_workdir), "--to-hf needs --from-workdir (a jaxlm run directory)")
        _empty_target(args.to_hf)
        run = interop.load_run(args.from_workdir, step=args.step)
        eos = run.tokenizer.eos_id if run.tokenizer is not None else None
        interop.save_hf_gpt2(run.config.model, run.params, args.to_hf, eos_token_id=eos)
        what = f"step {run.step}" if run.step is not None else "imported weights"
        print(f"wrote {args.to_hf} (config.json, model.safetensors) from {args.from_workdir} "
              f"({what})")
        return 0

    _check(not args.from_workdir, "--from-workdir converts to --to-hf; to copy a run, copy "
           "its directory")
    _empty_target(args.to_workdir)
    from jaxlm.config import RunConfig, replace
    from jaxlm.data.tokenizers import ByteTokenizer

    if args.from_hf:
        model_cfg, params = interop.load_hf_gpt2(args.from_hf, scan_layers=args.scan_layers)
        source = pathlib.Path(args.from_hf)
        has_own_tokenizer = any((source / f).exists()
                                for f in ("tokenizer.json", "vocab.json", "merges.txt"))
    else:
        _check(not args.scan_layers, "--scan-layers applies to Transformers only")
        model_cfg, params = interop.load_torch_lstm(args.from_torch_lstm)
        has_own_tokenizer = False
    tokenizer = None
    if has_own_tokenizer:
        print(f"jaxlm: note: {args.from_hf} has a Hugging Face tokenizer, which jaxlm does not "
              "read: the run directory gets no tokenizer (generate from token ids in Python)",
              file=sys.stderr)
    elif model_cfg.vocab_size >= ByteTokenizer.vocab_size:
        tokenizer = ByteTokenizer()
    run_cfg = RunConfig(model=model_cfg)
    run_cfg = replace(run_cfg, **{"data.seq_len": min(run_cfg.data.seq_len, model_cfg.max_seq_len)})
    interop.write_run(args.to_workdir, run_cfg, params, tokenizer)
    print(f"wrote {args.to_workdir} ({model_cfg.family}, {model_cfg.n_layers} layers, "
          f"d_model {model_cfg.d_model}, vocab {model_cfg.vocab_size}; tokenizer: "
          f"{'byte' if tokenizer else 'none'})")
    return 0
