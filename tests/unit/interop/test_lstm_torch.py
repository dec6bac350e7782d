"""jaxlm.interop.lstm_torch: PyTorch LSTM state_dicts (parity with torch.nn.LSTM)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxlm.config import ModelConfig
from jaxlm.errors import JaxlmError
from jaxlm.generate import generate
from jaxlm.interop import load_torch_lstm, lstm_to_torch
from jaxlm.models import build_model

VOCAB = 300


def _tokens(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t))


def _jax_logits(cfg: ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(build_model(cfg).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))


# ---------------------------------------------------------------------------------------------
# PyTorch LSTM language models


class TorchLSTMLM(torch.nn.Module):
    def __init__(self, vocab=VOCAB, d=32, layers=2, tie=False, names=("embedding", "lstm", "head"),
                 e=None):
        super().__init__()
        self.names = names
        setattr(self, names[0], torch.nn.Embedding(vocab, e or d))
        setattr(self, names[1], torch.nn.LSTM(e or d, d, layers, batch_first=True))
        setattr(self, names[2], torch.nn.Linear(d, vocab))
        if tie:
            getattr(self, names[2]).weight = getattr(self, names[0]).weight

    def forward(self, x):
        emb, lstm, head = (getattr(self, n) for n in self.names)
        return head(lstm(emb(x))[0])


@pytest.mark.parametrize("variant", ["plain", "tied", "renamed-3-layers", "embed-16",
                                     "embed-48-1-layer"])
def test_torch_lstm_parity(variant):
    torch.manual_seed(0)
    kw = {"plain": {}, "tied": {"tie": True},
          "renamed-3-layers": {"layers": 3, "names": ("encoder", "rnn", "decoder")},
          "embed-16": {"e": 16}, "embed-48-1-layer": {"e": 48, "layers": 1}}[variant]
    net = TorchLSTMLM(**kw).eval()
    cfg, params = load_torch_lstm(net.state_dict())
    assert cfg.family == "lstm" and cfg.n_layers == kw.get("layers", 2) and cfg.d_model == 32
    assert cfg.embed_dim == kw.get("e")
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
    with pytest.raises(JaxlmError, match="no output layer of shape"):  # nothing to tie to
        load_torch_lstm(state)
    with pytest.raises(JaxlmError, match="LSTM"):
        load_torch_lstm({"embedding.weight": torch.zeros(VOCAB, 16)})


WORDS = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "café"]


def test_torch_word_lstm_import_carries_the_vocabulary(tmp_path):
    """convert: a vocabulary gives the run directory a word tokenizer (greedy generation through
    it: tests/e2e/test_interop.py); none gives no tokenizer (never the byte one) and a note
    saying how to give one; a vocabulary of the wrong size is refused, nothing written."""
    from jaxlm.data.tokenizers import load_tokenizer
    from jaxlm.interop.convert import torch_lstm_to_run

    net = TorchLSTMLM(vocab=len(WORDS), d=10, layers=1, e=6)
    torch.save(net.state_dict(), tmp_path / "lm.pt")
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    out = torch_lstm_to_run(tmp_path / "lm.pt", tmp_path / "run", vocab=tmp_path / "vocab.txt")
    assert out.model.embed_dim == 6 and out.model.d_model == 10
    assert load_tokenizer(tmp_path / "run").tokens == WORDS
    notes: list[str] = []  # vocabulary 300 would hold the byte tokenizer's 259 ids
    torch.save(TorchLSTMLM(d=8, layers=1).state_dict(), tmp_path / "lm300.pt")
    out = torch_lstm_to_run(tmp_path / "lm300.pt", tmp_path / "run2", note=notes.append)
    assert out.tokenizer is None and not (tmp_path / "run2" / "tokenizer.json").exists()
    assert len(notes) == 1 and "--vocab FILE" in notes[0]
    (tmp_path / "short.txt").write_text("<eos>\na\n")
    with pytest.raises(JaxlmError, match="holds 2 tokens but the model's embedding has 8 rows"):
        torch_lstm_to_run(tmp_path / "lm.pt", tmp_path / "run3", vocab=tmp_path / "short.txt")
    assert not (tmp_path / "run3").exists()
