"""`jaxlm convert`: weights in and out (Hugging Face GPT-2 / Llama / Mistral / Qwen2 folders,
PyTorch LSTM state_dicts, jaxlm run directories), through jaxlm.interop.convert."""

from __future__ import annotations

import argparse
import sys

from jaxlm.cli.status import Status
from jaxlm.errors import JaxlmError

NAME = "convert"

EPILOG = """\
directions:
  --from-hf DIR --to-workdir DIR       a Hugging Face save_pretrained folder of a GPT2LMHeadModel,
                                       LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM
                                       (config.json + model.safetensors, its sharded .index.json
                                       form, or pytorch_model.bin) -> a new jaxlm run directory
                                       (config.yaml, params/, tokenizer)
  --from-torch-lstm FILE --to-workdir DIR [--vocab FILE]
                                       a torch.save'd state_dict of Embedding -> LSTM -> Linear;
                                       --vocab: its word vocabulary (one token per line, line i =
                                       id i, or a JSON {token: id} map), which generate needs
  --from-workdir DIR --to-hf DIR       a jaxlm run (newest checkpoint, or --step) -> a folder that
                                       transformers.AutoModelForCausalLM.from_pretrained loads:
                                       GPT2LMHeadModel, or LlamaForCausalLM (Qwen2ForCausalLM
                                       with model.qkv_bias) for rope + rmsnorm + swiglu models

examples:
  jaxlm convert --from-hf ~/models/gpt2 --to-workdir runs/gpt2
  jaxlm generate --workdir runs/gpt2 --prompt "Hello"
  python train.py --config runs/gpt2/config.yaml --workdir runs/gpt2-ft train.init_from=runs/gpt2
  jaxlm convert --from-workdir runs/quickstart --to-hf exported/quickstart
  jaxlm convert --from-torch-lstm lm.pt --vocab vocab.txt --to-workdir runs/word-lstm

Safetensors are read and written without PyTorch; pytorch_model.bin and .pt files need it.
A converted run directory uses the byte tokenizer when the model's vocabulary holds it and the
source has no tokenizer of its own; jaxlm does not read Hugging Face tokenizer files.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(NAME, help="import/export weights (Hugging Face GPT-2/Llama, PyTorch LSTM)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Convert model weights between jaxlm run directories and "
                       "Hugging Face GPT-2 / Llama-family / PyTorch LSTM checkpoints.")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="a Hugging Face GPT-2 or Llama-family folder")
    src.add_argument("--from-torch-lstm", metavar="FILE", help="a PyTorch LSTM LM state_dict")
    src.add_argument("--from-workdir", metavar="DIR", help="a jaxlm run directory")
    dst = c.add_mutually_exclusive_group(required=True)
    dst.add_argument("--to-workdir", metavar="DIR", help="a new jaxlm run directory")
    dst.add_argument("--to-hf", metavar="DIR", help="a new Hugging Face GPT-2 or Llama folder")
    c.add_argument("--step", type=int, default=None, help="with --from-workdir: checkpoint step")
    c.add_argument("--vocab", metavar="FILE", default=None,
                   help="with --from-torch-lstm: the word vocabulary (one token per line, or a "
                   "JSON token->id map)")
    c.add_argument("--scan-layers", action="store_true",
                   help="with --to-workdir: store Transformer layers stacked (model.scan_layers)")
    c.set_defaults(func=run)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise JaxlmError(msg)


def _note(msg: str) -> None:
    print(f"jaxlm: note: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> Status:
    if args.to_hf:
        _check(bool(args.from_workdir), "--to-hf needs --from-workdir (a jaxlm run directory)")
    else:
        _check(not args.from_workdir, "--from-workdir converts to --to-hf; to copy a run, copy "
               "its directory")
        _check(not (args.from_torch_lstm and args.scan_layers),
               "--scan-layers applies to Transformers only")
    _check(args.vocab is None or bool(args.from_torch_lstm),
           "--vocab applies to --from-torch-lstm (a word-level LSTM's vocabulary)")
    from jaxlm.cli.process import quiet_checkpoints
    from jaxlm.interop import convert

    quiet_checkpoints()

    if args.to_hf:
        out = convert.run_to_hf(args.from_workdir, args.to_hf, step=args.step)
        what = f"step {out.step}" if out.step is not None else "imported weights"
        print(f"wrote {args.to_hf} (config.json, model.safetensors) from {args.from_workdir} "
              f"({what})")
        return Status.OK
    if args.from_hf:
        out = convert.hf_to_run(args.from_hf, args.to_workdir, scan_layers=args.scan_layers,
                                note=_note)
    else:
        out = convert.torch_lstm_to_run(args.from_torch_lstm, args.to_workdir, vocab=args.vocab,
                                        note=_note)
    m = out.model
    tok = "none" if out.tokenizer is None else getattr(out.tokenizer, "kind", "byte")
    print(f"wrote {args.to_workdir} ({m.family}, {m.n_layers} layers, d_model {m.d_model}, "
          f"vocab {m.vocab_size}; tokenizer: {tok})")
    return Status.OK
