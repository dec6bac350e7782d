"""Writes a tiny random GPT-2 with a byte-level BPE tokenizer trained here, as `save_pretrained`
leaves a real one (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), to
try README's "From Hugging Face" workflow offline. Needs torch, transformers and tokenizers.
A real GPT-2 folder (`GPT2LMHeadModel.from_pretrained("gpt2").save_pretrained(DIR)` and the
same for its tokenizer) goes through the same commands.

    python docs/examples/tiny_hf_gpt2.py models/tiny-gpt2 [--vocab 300]
"""

from __future__ import annotations

import argparse

TEXT = ["the quick brown fox jumps over the lazy dog.", "héllo wörld: 日本語 text",
        "def f(x):\n    return x + 1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--vocab", type=int, default=300)
    args = ap.parse_args()

    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>").save_pretrained(args.path)
    torch.manual_seed(0)
    eos = tok.token_to_id("<|endoftext|>")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=tok.get_vocab_size(),
        bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(args.path)
    print(f"wrote {args.path} (GPT-2, 2 layers, d_model 64, vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
