"""Text generation: a preallocated KV cache (Transformer) or carried (c, h) state (LSTM), with the
whole decoding loop compiled as one `jax.jit` (prefill, then a `lax.while_loop` of one-token
steps; static shapes, so one compile per prompt-length bucket and `max_new_tokens`).

Prompts of different lengths share a batch by left padding: padding sits at negative positions,
which the attention mask and the LSTM state update skip, so every row computes exactly what it
would alone. Sampling: greedy (`temperature=0`), temperature, top-k, top-p (nucleus), applied in
that order as in Hugging Face `generate`, after the repetition penalty; `eos_id` stops a row;
the same seed gives the same samples.

    from jaxlm.generate import TextGenerator
    gen = TextGenerator.from_workdir("runs/quickstart")   # or .from_pretrained(HF folder)
    print(gen("def ", max_new_tokens=100, temperature=0.8, top_p=0.95)[0]["generated_text"])
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.errors import JaxlmError
from jaxlm.models.layers import DECODE_KERNELS
from jaxlm.models.transformer import Transformer, decode_kernels

PROMPT_BUCKET = 16  # prompt lengths are padded up to a multiple of this (fewer recompiles)
DEFAULT_MAX_NEW_TOKENS = 64

# ---------------------------------------------------------------------------------------------
# sampling math (pure)


def filter_top_k(logits_bv: jax.Array, top_k: int) -> jax.Array:
    """Keeps the `top_k` largest logits of each row (ties with the k-th too); -inf elsewhere.
    `top_k` <= 0 or >= vocab: unchanged."""
    if top_k <= 0 or top_k >= logits_bv.shape[-1]:
        return logits_bv
    kth_b1 = jax.lax.top_k(logits_bv, top_k)[0][:, -1:]
    return jnp.where(logits_bv < kth_b1, -jnp.inf, logits_bv)


def filter_top_p(logits_bv: jax.Array, top_p: jax.Array | float) -> jax.Array:
    """Nucleus filtering: keeps the smallest set of most likely tokens whose probability reaches
    `top_p` (the most likely token always stays); -inf elsewhere. top_p in (0, 1]."""
    sorted_bv = -jnp.sort(-logits_bv, axis=-1)  # descending
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
    keep_bv = (mass_before_bv < top_p).at[:, 0].set(True)
    threshold_b1 = jnp.min(jnp.where(keep_bv, sorted_bv, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits_bv < threshold_b1, -jnp.inf, logits_bv)


def sample_logits(
    key: jax.Array, logits_bv: jax.Array, temperature: jax.Array | float, top_k: int = 0,
    top_p: Optional[jax.Array | float] = None,
) -> jax.Array:
    """One token id per row from logits / temperature, after top-k then top-p filtering."""
    logits_bv = logits_bv.astype(jnp.float32) / temperature
    logits_bv = filter_top_k(logits_bv, top_k)
    if top_p is not None:
        logits_bv = filter_top_p(logits_bv, top_p)
    return jax.random.categorical(key, logits_bv, axis=-1).astype(jnp.int32)


def penalize_repeats(logits_bv: jax.Array, seen_bv: jax.Array,
                     penalty: jax.Array | float) -> jax.Array:
    """Hugging Face's repetition penalty (CTRL): the logit of each token a row already holds is
    divided by `penalty` when positive, multiplied by it when negative (>1 discourages)."""
    logits_bv = logits_bv.astype(jnp.float32)
    hit_bv = jnp.where(logits_bv > 0, logits_bv / penalty, logits_bv * penalty)
    return jnp.where(seen_bv, hit_bv, logits_bv)


# ---------------------------------------------------------------------------------------------
# the model's decode path


def init_cache(model: nn.Module, batch: int, length: int) -> Any:
    """Zeroed decoding state for `batch` rows of up to `length` tokens (no compute)."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), tokens, positions_bt=tokens, decode=True)
    )["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def decode_step(
    model: nn.Module, params: Any, cache: Any, tokens_bt: jax.Array, positions_bt: jax.Array,
    kernels: Optional[dict] = None,
) -> tuple[jax.Array, Any]:
    """Feeds tokens (b, t) at absolute positions (b, t) after the cached ones:
    (logits (b, t, vocab), the updated cache). Negative positions are left padding. `kernels`:
    a Transformer's `decode_kernels(params)`, read for one-row steps (batch 1)."""
    variables = {"params": params, "cache": cache}
    if kernels is not None:
        variables[DECODE_KERNELS] = kernels
    logits, mutated = model.apply(
        variables, tokens_bt, positions_bt=positions_bt, decode=True, mutable=["cache"],
    )
    return logits, mutated["cache"]


_decode_kernels = jax.jit(decode_kernels)


@partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "top_k", "greedy", "use_top_p", "eos_id", "pad_id",
    "return_logits", "use_penalty"))
def _generate(model, params, prompt_bp, pad_b, rng, temperature, top_p, penalty, *,
              max_new_tokens: int, top_k: int, greedy: bool, use_top_p: bool,
              eos_id: Optional[int], pad_id: int, return_logits: bool, use_penalty: bool,
              kernels: Optional[dict] = None):
    b, p = prompt_bp.shape
    n = max_new_tokens
    cache = init_cache(model, b, p + n - 1)  # the last new token is never fed back
    positions_bp = jnp.arange(p, dtype=jnp.int32)[None, :] - pad_b[:, None]
    logits_bpv, cache = decode_step(model, params, cache, prompt_bp, positions_bp)  # prefill
    lengths_b = p - pad_b
    rows_b1 = jnp.arange(b)[:, None]
    seen_bv = None  # the tokens each row holds (prompt and generated): repetition penalty
    if use_penalty:
        seen_bv = jnp.zeros((b, logits_bpv.shape[-1]), bool).at[rows_b1, prompt_bp].max(
            positions_bp >= 0)

    def pick(i, logits_bv, done_b, seen_bv):
        if seen_bv is not None:
            logits_bv = penalize_repeats(logits_bv, seen_bv, penalty)
        if greedy:
            tok_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
        else:
            tok_b = sample_logits(jax.random.fold_in(rng, i), logits_bv, temperature, top_k,
                                  top_p if use_top_p else None)
        tok_b = jnp.where(done_b, pad_id, tok_b)
        if eos_id is not None:
            done_b = done_b | (tok_b == eos_id)
        if seen_bv is not None:
            seen_bv = seen_bv.at[rows_b1[:, 0], tok_b].set(True)
        return tok_b, done_b, seen_bv

    logits_bv = logits_bpv[:, -1]
    tok_b, done_b, seen_bv = pick(0, logits_bv, jnp.zeros((b,), bool), seen_bv)
    out_bn = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(tok_b)
    scores_bnv = None
    if return_logits:
        scores_bnv = jnp.zeros((b, n, logits_bv.shape[-1]), jnp.float32).at[:, 0].set(logits_bv)

    def cond(state):
        i, _, done_b, *_ = state
        return (i < n) & ~jnp.all(done_b)

    def body(state):
        i, tok_b, done_b, cache, out_bn, scores_bnv, seen_bv = state
        positions_b1 = (lengths_b + i - 1)[:, None]
        logits_b1v, cache = decode_step(model, params, cache, tok_b[:, None], positions_b1,
                                        kernels)
        logits_bv = logits_b1v[:, 0]
        tok_b, done_b, seen_bv = pick(i, logits_bv, done_b, seen_bv)
        out_bn = jax.lax.dynamic_update_index_in_dim(out_bn, tok_b, i, axis=1)
        if scores_bnv is not None:
            scores_bnv = jax.lax.dynamic_update_index_in_dim(scores_bnv, logits_bv, i, axis=1)
        return i + 1, tok_b, done_b, cache, out_bn, scores_bnv, seen_bv

    state = (jnp.int32(1), tok_b, done_b, cache, out_bn, scores_bnv, seen_bv)
    _, _, done_b, _, out_bn, scores_bnv, _ = jax.lax.while_loop(cond, body, state)
    return out_bn, done_b, scores_bnv


# ---------------------------------------------------------------------------------------------
# the public entry points


@dataclasses.dataclass
class GenerationOutput:
    """One entry per sample, prompt-major: prompt 0's `num_return_sequences` samples first."""

    sequences: list[list[int]]  # prompt + new tokens (EOS not included)
    new_tokens: list[list[int]]  # the generated tokens only (EOS not included)
    finished: list[bool]  # the sample ended with EOS (else it ran to max_new_tokens)
    # (samples, max_new_tokens, vocab) float32: the raw logits each new token was chosen from
    # (only with return_logits=True; zeros after a row's EOS)
    logits: Optional[np.ndarray] = None


PromptIds = Union[Sequence[int], Sequence[Sequence[int]], np.ndarray, jax.Array]


def _as_prompts(prompts: PromptIds) -> list[list[int]]:
    if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                    and isinstance(prompts[0], str)):
        raise JaxlmError("generate() takes token ids; for text use TextGenerator (or encode it "
                         "with the run's tokenizer)")
    if isinstance(prompts, (np.ndarray, jax.Array)):
        a = np.asarray(prompts)
        if a.ndim not in (1, 2):
            raise JaxlmError(f"prompt ids must be 1-D or 2-D; got shape {a.shape}")
        return [a.astype(np.int64).tolist()] if a.ndim == 1 else [r.tolist() for r in a]
    prompts = list(prompts)
    if not prompts:
        raise JaxlmError("no prompts given")
    if all(isinstance(x, (int, np.integer)) for x in prompts):
        return [[int(x) for x in prompts]]
    return [[int(x) for x in np.asarray(p).reshape(-1)] for p in prompts]


def check_generative(cfg: Any) -> None:
    """Generation needs a causal next-token model (model.objective=clm, causal attention)."""
    objective = getattr(cfg, "objective", "clm")
    if objective != "clm" or getattr(cfg, "causal", None) is False:
        what = {"mlm": "a masked-LM encoder (model.objective=mlm)",
                "classify": "a classifier (model.objective=classify)"}.get(
                    objective, "a bidirectional model (model.causal=false)")
        raise JaxlmError(f"cannot generate text with {what}: generation needs a causal language "
                         "model (model.objective=clm)")


def generate(
    model: nn.Module, params: Any, prompts: PromptIds, *,
    max_new_tokens: Optional[int] = None, max_length: Optional[int] = None,
    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_return_sequences: int = 1,
    eos_id: Optional[int] = None, pad_id: int = 0, seed: int = 0, return_logits: bool = False,
    repetition_penalty: float = 1.0,
) -> GenerationOutput:
    """Generates continuations of one prompt (a list of token ids) or a batch of prompts.

    max_new_tokens: new tokens per sample (default 64); or max_length: prompt + new tokens
    (the longest prompt's length counts, as in Hugging Face). The Transformer's context,
    `model.max_seq_len`, must hold prompt + new tokens. temperature 0 is greedy decoding;
    top_k 0 and top_p 1.0 disable those filters. eos_id: a row stops after emitting it.
    repetition_penalty > 1 discourages the tokens a row already holds, its prompt's included
    (Hugging Face's semantics; its left padding is not counted here); 1.0 disables it.
    """
    rows = _as_prompts(prompts)
    cfg = model.cfg
    check_generative(cfg)
    for i, r in enumerate(rows):
        if not r:
            raise JaxlmError(f"prompt {i} is empty: give at least one token (e.g. the EOS id "
                             "as a start token)")
        bad = [x for x in r if not 0 <= x < cfg.vocab_size]
        if bad:
            raise JaxlmError(f"prompt {i} has token id {bad[0]} outside the model's vocabulary "
                             f"[0, {cfg.vocab_size})")
    longest = max(len(r) for r in rows)
    if max_new_tokens is None:
        max_new_tokens = max_length - longest if max_length is not None else DEFAULT_MAX_NEW_TOKENS
        if max_length is not None and max_new_tokens < 1:
            raise JaxlmError(f"max_length={max_length} leaves no room after the prompt of "
                             f"{longest} tokens")
    if max_new_tokens < 1:
        raise JaxlmError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if cfg.family == "transformer" and longest + max_new_tokens > cfg.max_seq_len:
        raise JaxlmError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) is longer than the "
            f"model's context, model.max_seq_len={cfg.max_seq_len}"
        )
    if temperature < 0:
        raise JaxlmError(f"temperature must be >= 0 (0 is greedy); got {temperature}")
    if top_k < 0:
        raise JaxlmError(f"top_k must be >= 0 (0 disables it); got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise JaxlmError(f"top_p must be in (0, 1] (1 disables it); got {top_p}")
    if num_return_sequences < 1:
        raise JaxlmError(f"num_return_sequences must be >= 1; got {num_return_sequences}")
    if not repetition_penalty > 0:
        raise JaxlmError(f"repetition_penalty must be > 0 (1 disables it); got "
                         f"{repetition_penalty}")

    rows = [r for r in rows for _ in range(num_return_sequences)]
    p = -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET
    prompt = np.full((len(rows), p), pad_id, np.int32)
    for i, r in enumerate(rows):
        prompt[i, p - len(r):] = r
    pad = np.asarray([p - len(r) for r in rows], np.int32)
    kernels = None
    if len(rows) == 1 and isinstance(model, Transformer) and jax.default_backend() == "cpu":
        # Batch 1 on CPU reads the residual projections transposed (layers.DECODE_KERNELS; at
        # batch 8 that was slower: 159 vs 182 tokens/s on GPT-2 small), copied by a program of
        # their own: copied inside the decoding program they sat in its temporary buffer and the
        # loop read them no faster than the kernels themselves (46.0 vs 46.7 tokens/s; as its
        # inputs, 50.7).
        kernels = _decode_kernels(params)
    out, done, logits = _generate(
        model, params, jnp.asarray(prompt), jnp.asarray(pad), jax.random.PRNGKey(seed),
        jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), jnp.float32(repetition_penalty),
        max_new_tokens=max_new_tokens, top_k=top_k, greedy=temperature == 0,
        use_top_p=top_p < 1.0, eos_id=eos_id, pad_id=pad_id, return_logits=return_logits,
        use_penalty=repetition_penalty != 1.0, kernels=kernels,
    )
    out, done = np.asarray(out), np.asarray(done)
    new = []
    for row, d in zip(out.tolist(), done):
        new.append(row[: row.index(eos_id)] if d else row)
    return GenerationOutput(
        sequences=[r + n for r, n in zip(rows, new)], new_tokens=new,
        finished=[bool(d) for d in done],
        logits=None if logits is None else np.asarray(logits),
    )


def sample_tokens(
    model: nn.Module, params: Any, prompt_ids: Sequence[int], *, num_samples: int,
    max_new_tokens: int, max_len: int, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
) -> np.ndarray:
    """The earlier API, kept for callers: (num_samples, prompt + new) token ids with the total
    capped at `max_len`; no EOS stop. New code: `generate`."""
    prompt = [int(i) for i in prompt_ids][:max_len - 1]
    out = generate(model, params, prompt, max_new_tokens=min(max_new_tokens, max_len - len(prompt)),
                   num_return_sequences=num_samples, temperature=temperature, top_k=top_k,
                   seed=seed)
    return np.asarray(out.sequences, np.int32)


def run_samples(model: nn.Module, params: Any, tokenizer: Any, *, prompt: str, n: int,
                tokens: int, temperature: float, seed: int) -> list[str]:
    """The end-of-run samples: `n` continuations of `prompt` (the EOS token when it encodes to
    nothing), up to `tokens` new tokens each within the model's context, decoded."""
    if not n:
        return []
    ids = [int(i) for i in tokenizer.encode(prompt)] or [tokenizer.eos_id]
    m = model.cfg
    if m.family == "transformer":
        ids = ids[-(m.max_seq_len - 1):]
        tokens = min(tokens, m.max_seq_len - len(ids))
    out = generate(model, params, ids, max_new_tokens=tokens, num_return_sequences=n,
                   temperature=temperature, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                   seed=seed)
    return [tokenizer.decode(s) for s in out.sequences]


def __getattr__(name: str) -> Any:
    if name == "TextGenerator":  # its own module (jaxlm.text_generation), which imports this one
        from jaxlm.text_generation import TextGenerator

        return TextGenerator
    raise AttributeError(f"module 'jaxlm.generate' has no attribute {name!r}")
