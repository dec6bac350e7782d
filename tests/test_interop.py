"""Interop: Hugging Face GPT-2 folders in and out (parity of logits and greedy generation with
transformers), PyTorch LSTM state_dicts (parity with torch.nn.LSTM), the convert CLI, and
fine-tuning from imported weights (`train.init_from`). Everything randomly initialized, offline."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # the `test` extra: CPU PyTorch and transformers are the references
import transformers

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.generate import generate
from jaxlm.interop import (
    config_from_hf, load_hf_gpt2, load_torch_lstm, lstm_to_torch, save_hf_gpt2,
)
from jaxlm.models import build_model

from conftest import REPO_ROOT, jaxlm_cmd, run_all
from test_train_e2e import _env

VOCAB = 300
HF_SHAPE = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _randomize(model: "torch.nn.Module", std: float = 0.1, seed: int = 0) -> None:
    """HF initializes LayerNorms to 1/0 and biases to 0: perturb every tensor so that a
    transposed or misplaced one cannot go unnoticed; a wider embedding spreads the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.add_(noise if "weight" not in name or p.ndim > 1 else noise * 0.5)
            if name.endswith("wte.weight"):
                p.mul_(3.0)


def _hf_model(**overrides):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**HF_SHAPE, **overrides}))
    _randomize(model)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = _hf_model()
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    model.save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return model, path


def _tokens(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t))


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(tokens, np.int64))).logits.numpy()


def _jax_logits(cfg: ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(build_model(cfg).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2 -> jaxlm


@pytest.mark.parametrize("scan_layers", [False, True])
def test_load_hf_gpt2_logits_match(hf_dir, scan_layers):
    model, path = hf_dir
    cfg, params = load_hf_gpt2(path, scan_layers=scan_layers)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.vocab_size, cfg.max_seq_len) == (
        64, 2, 4, VOCAB, 64)
    assert cfg.tie_embeddings and cfg.position == "learned" and cfg.norm_eps == 1e-5
    assert ("h" in params) == scan_layers
    tokens = _tokens(3, 40)
    want, got = _hf_logits(model, tokens), _jax_logits(cfg, params, tokens)
    diff = float(np.abs(want - got).max())
    print(f"max |logits jaxlm - transformers| = {diff:.2e} (logit scale {np.abs(want).max():.1f})")
    assert diff < 1e-4


def test_greedy_generation_matches_hf(hf_dir):
    model, path = hf_dir
    cfg, params = load_hf_gpt2(path)
    prompts = [[5, 17, 250, 3, 99], [42, 7, 7]]
    ours = generate(build_model(cfg), params, prompts, max_new_tokens=24, temperature=0.0)
    for prompt, new in zip(prompts, ours.new_tokens):
        with torch.no_grad():
            hf = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24,
                                min_new_tokens=24, pad_token_id=0)
        assert new == hf[0, len(prompt):].tolist()
    # a left-padded batch in transformers gives the same continuations as our batch
    with torch.no_grad():
        ids = torch.tensor([prompts[0], [0, 0] + prompts[1]])
        mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
        hf = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=24,
                            min_new_tokens=24, pad_token_id=0)
    assert hf[:, 5:].tolist() == ours.new_tokens


def test_pytorch_model_bin(hf_dir, tmp_path):
    model, path = hf_dir
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text((path / "config.json").read_text())
    # the classic layout: no `transformer.` prefix, attention-mask buffers, a tied lm_head
    state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    torch.save(state, folder / "pytorch_model.bin")
    cfg, params = load_hf_gpt2(folder)
    _, want = load_hf_gpt2(path)
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_bfloat16_safetensors_without_torch_reader(hf_dir, tmp_path):
    model, _ = hf_dir
    bf16 = _hf_model().to(torch.bfloat16)
    bf16.save_pretrained(tmp_path / "bf16")
    cfg, params = load_hf_gpt2(tmp_path / "bf16")
    assert params["wte"]["embedding"].dtype == np.float32
    want = bf16.transformer.wte.weight.detach().float().numpy()
    np.testing.assert_array_equal(params["wte"]["embedding"], want)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "llama"}, "model_type"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"activation_function": "gelu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"scale_attn_weights": False}, "scale_attn_weights"),
    ({"add_cross_attention": True}, "cross-attention"),
    ({"n_head": 5}, "divisible"),
])
def test_unrepresentable_hf_configs_are_rejected(change, match):
    hf = {**HF_SHAPE, "model_type": "gpt2", **change}
    with pytest.raises(JaxlmError, match=match):
        config_from_hf(hf)


def test_missing_or_misshapen_weights(hf_dir, tmp_path):
    _, path = hf_dir
    with pytest.raises(JaxlmError, match="does not exist"):
        load_hf_gpt2(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JaxlmError, match="config.json"):
        load_hf_gpt2(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    hf = json.loads((path / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**hf, "n_embd": 32}))
    with pytest.raises(JaxlmError, match="no weights"):
        load_hf_gpt2(bad)
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(JaxlmError, match="shape"):
        load_hf_gpt2(bad)


# ---------------------------------------------------------------------------------------------
# jaxlm -> Hugging Face GPT-2


GPT2 = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)


@pytest.mark.parametrize("variant", ["tied", "untied-scan", "d_ff"])
def test_save_hf_gpt2_round_trip(variant, tmp_path):
    cfg = {"tied": GPT2, "untied-scan": dataclasses.replace(GPT2, tie_embeddings=False,
                                                            scan_layers=True),
           "d_ff": dataclasses.replace(GPT2, d_ff=48)}[variant]
    model = build_model(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                          params)  # biases and norms away from their 0/1 init
    save_hf_gpt2(cfg, params, tmp_path / "out", eos_token_id=1)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert hf.config.eos_token_id == 1
    tokens = _tokens(2, 20)
    diff = float(np.abs(_hf_logits(hf, tokens) - _jax_logits(cfg, params, tokens)).max())
    print(f"{variant}: max |logits transformers(exported) - jaxlm| = {diff:.2e}")
    assert diff < 1e-4
    back_cfg, back = load_hf_gpt2(tmp_path / "out", scan_layers=cfg.scan_layers)
    assert back_cfg.tie_embeddings == cfg.tie_embeddings and back_cfg.d_ff == cfg.d_ff
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, back)


@pytest.mark.parametrize("change", [dict(position="rope"), dict(norm="rmsnorm"),
                                    dict(mlp="swiglu"), dict(n_kv_heads=2),
                                    dict(use_bias=False)])
def test_export_rejects_non_gpt2_models(change, tmp_path):
    cfg = dataclasses.replace(GPT2, **change)
    with pytest.raises(JaxlmError, match="cannot export"):
        save_hf_gpt2(cfg, {}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# PyTorch LSTM language models


class TorchLSTMLM(torch.nn.Module):
    def __init__(self, vocab=VOCAB, d=32, layers=2, tie=False, names=("embedding", "lstm", "head")):
        super().__init__()
        self.names = names
        setattr(self, names[0], torch.nn.Embedding(vocab, d))
        setattr(self, names[1], torch.nn.LSTM(d, d, layers, batch_first=True))
        setattr(self, names[2], torch.nn.Linear(d, vocab))
        if tie:
            getattr(self, names[2]).weight = getattr(self, names[0]).weight

    def forward(self, x):
        emb, lstm, head = (getattr(self, n) for n in self.names)
        return head(lstm(emb(x))[0])


@pytest.mark.parametrize("variant", ["plain", "tied", "renamed-3-layers"])
def test_torch_lstm_parity(variant):
    torch.manual_seed(0)
    kw = {"plain": {}, "tied": {"tie": True},
          "renamed-3-layers": {"layers": 3, "names": ("encoder", "rnn", "decoder")}}[variant]
    net = TorchLSTMLM(**kw).eval()
    cfg, params = load_torch_lstm(net.state_dict())
    assert cfg.family == "lstm" and cfg.n_layers == kw.get("layers", 2) and cfg.d_model == 32
    tokens = _tokens(3, 25)
    with torch.no_grad():
        want = net(torch.from_numpy(tokens)).numpy()
    got = _jax_logits(cfg, params, tokens)
    diff = float(np.abs(want - got).max())
    print(f"{variant}: max |logits jaxlm - torch.nn.LSTM| = {diff:.2e}")
    assert diff < 1e-5
    # and back: jaxlm params -> a torch state_dict that reproduces the same logits
    state = lstm_to_torch(cfg, params, embedding=kw.get("names", ("embedding",))[0],
                          lstm=kw.get("names", (0, "lstm"))[1], head=kw.get("names", (0, 0, "head"))[2])
    net2 = TorchLSTMLM(**kw).eval()
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        np.testing.assert_allclose(net2(torch.from_numpy(tokens)).numpy(), want, atol=1e-6)


def test_torch_lstm_from_file_and_generation(tmp_path):
    torch.manual_seed(1)
    net = TorchLSTMLM().eval()
    torch.save(net.state_dict(), tmp_path / "lm.pt")
    cfg, params = load_torch_lstm(tmp_path / "lm.pt")
    out = generate(build_model(cfg), params, [5, 6, 7], max_new_tokens=8, temperature=0.0)
    ids = [5, 6, 7]
    with torch.no_grad():  # greedy in torch, one full forward per token
        for _ in range(8):
            ids.append(int(net(torch.tensor([ids]))[0, -1].argmax()))
    assert out.sequences[0] == ids


def test_torch_lstm_rejections():
    bi = torch.nn.LSTM(32, 32, 1, batch_first=True, bidirectional=True)
    state = {"embedding.weight": torch.zeros(VOCAB, 32),
             **{f"lstm.{k}": v for k, v in bi.state_dict().items()}}
    with pytest.raises(JaxlmError, match="bidirectional"):
        load_torch_lstm(state)
    narrow = torch.nn.LSTM(16, 32, 1, batch_first=True)
    state = {"embedding.weight": torch.zeros(VOCAB, 16),
             **{f"lstm.{k}": v for k, v in narrow.state_dict().items()}}
    with pytest.raises(JaxlmError, match="input size"):
        load_torch_lstm(state)
    with pytest.raises(JaxlmError, match="LSTM"):
        load_torch_lstm({"embedding.weight": torch.zeros(VOCAB, 16)})


# ---------------------------------------------------------------------------------------------
# the convert CLI and fine-tuning from imported weights


def _jaxlm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(jaxlm_cmd(*args), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_convert_cli_both_ways(hf_dir, tmp_path):
    model, path = hf_dir
    run = tmp_path / "run"
    proc = _jaxlm("convert", "--from-hf", str(path), "--to-workdir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / "config.yaml").is_file() and (run / "params").is_dir()
    assert (run / "tokenizer.json").is_file()  # vocab 300 holds the byte tokenizer
    out = tmp_path / "hf_out"
    # nothing is overwritten; bad combinations are one line
    bad = [
        (["--from-hf", str(path), "--to-workdir", str(run)], "not empty"),
        (["--from-hf", str(path), "--to-hf", str(tmp_path / "x")], "--from-workdir"),
        (["--from-hf", str(tmp_path / "none"), "--to-workdir", str(tmp_path / "y")],
         "does not exist"),
    ]
    # everything below only reads `run`: all processes at once
    gen, back_proc, *errors = run_all(
        [jaxlm_cmd("generate", "--workdir", str(run), "--prompt", "ab", "--max-new-tokens", "5",
                   "--temperature", "0"),
         jaxlm_cmd("convert", "--from-workdir", str(run), "--to-hf", str(out))]
        + [jaxlm_cmd("convert", *args) for args, _ in bad], env=_env())
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("--- sample 1 ---\nab")
    assert back_proc.returncode == 0, back_proc.stderr
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    tokens = _tokens(2, 16)
    np.testing.assert_allclose(_hf_logits(back, tokens), _hf_logits(model, tokens), atol=1e-5)
    for (args, match), proc in zip(bad, errors):
        assert proc.returncode == 2 and match in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_fine_tune_from_hf_folder(hf_dir, tmp_path):
    from jaxlm.checkpoint import restore_params
    from test_train_e2e import TINY, _cmd, _fail_msg

    _, path = hf_dir
    model_keys = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4",
                  "model.max_seq_len=64", f"model.vocab_size={VOCAB}"]
    # a learning rate of ~0: the one step leaves the imported weights (not a random init)
    args = [*TINY, *model_keys, "train.steps=1", "optim.warmup_steps=0", "optim.lr=1e-12",
            "train.samples=0", f"train.init_from={path}"]
    # and, at the same time, a model that does not match: refused with one line naming the keys
    proc, mismatch = run_all(
        [_cmd("--workdir", str(tmp_path / "ft"), *args, "--quiet"),
         _cmd("--workdir", str(tmp_path / "ft2"), *TINY, "model.max_seq_len=64",
              "train.steps=1", "optim.warmup_steps=0", f"train.init_from={path}")], env=_env())
    assert proc.returncode == 0, _fail_msg(proc)
    params, step = restore_params(tmp_path / "ft" / "checkpoints")
    _, want = load_hf_gpt2(path)
    assert step == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-8), params, want)
    proc = mismatch
    assert proc.returncode == 2, _fail_msg(proc)
    assert "model.d_model" in proc.stderr and "Traceback" not in proc.stderr
