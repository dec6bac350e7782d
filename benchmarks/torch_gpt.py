"""The jaxlm quickstart / GPT-2 Transformer and its AdamW in PyTorch, for `bench_vs_torch.py`.

Same network as `jaxlm.models.transformer.Transformer` with the GPT-2 layout: learned positions,
pre-LayerNorm blocks (eps from the config), fused q|k|v projection, causal
`scaled_dot_product_attention`, tanh-GELU MLP (4x), biases, tied embeddings, final LayerNorm;
N(0, init_std) init with the two residual output projections at init_std / sqrt(2 * n_layers),
zero biases. Parameter names follow Hugging Face GPT-2 (`jaxlm.interop.hf_gpt2.params_to_hf`),
so `load_jax_params` starts it from the very weights a jaxlm state holds.

The optimizer matches `jaxlm.train.optim.build_optimizer` for AdamW: global-norm clipping, then
AdamW with decay on matrices only (dim >= 2), the learning rate set each step from jaxlm's own
optax schedule (so step s uses schedule(s), as optax counts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optax
import torch
import torch.nn.functional as F
from torch import nn

from jaxlm.config import ModelConfig, OptimConfig
from jaxlm.interop.hf_gpt2 import params_to_hf
from jaxlm.models.transformer import mlp_width


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln_1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.c_fc = nn.Linear(d, mlp_width(cfg))
        self.mlp_proj = nn.Linear(mlp_width(cfg), d)

    def forward(self, x_btd: torch.Tensor) -> torch.Tensor:
        b, t, d = x_btd.shape
        q, k, v = self.c_attn(self.ln_1(x_btd)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        a_bnth = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x_btd = x_btd + self.attn_proj(a_bnth.transpose(1, 2).reshape(b, t, d))
        h = F.gelu(self.c_fc(self.ln_2(x_btd)), approximate="tanh")
        return x_btd + self.mlp_proj(h)


class TorchGPT(nn.Module):
    """tokens (b, t) int64 -> logits (b, t, vocab) float32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layout = (cfg.family, cfg.position, cfg.norm, cfg.mlp, cfg.tie_embeddings, cfg.use_bias)
        gpt2 = ("transformer", "learned", "layernorm", "gelu", True, True)
        if layout != gpt2 or cfg.n_kv_heads not in (None, cfg.n_heads):
            raise ValueError("TorchGPT implements the GPT-2 layout only")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            else:
                proj = name.endswith(("attn_proj.weight", "mlp_proj.weight"))
                nn.init.normal_(p, std=out_std if proj else cfg.init_std)

    def forward(self, tokens_bt: torch.Tensor) -> torch.Tensor:
        t = tokens_bt.shape[1]
        x_btd = self.wte(tokens_bt) + self.wpe.weight[:t]
        for block in self.h:
            x_btd = block(x_btd)
        return self.ln_f(x_btd) @ self.wte.weight.T

    @torch.no_grad()
    def load_jax_params(self, params: Any) -> None:
        """Copies a jaxlm Transformer's params (either layer layout) into this model."""
        hf = params_to_hf(self.cfg, params)  # Conv1D layout: (in, out) matrices
        names = {".attn.c_proj.": ".attn_proj.", ".mlp.c_proj.": ".mlp_proj.",
                 ".mlp.c_fc.": ".c_fc.", ".attn.c_attn.": ".c_attn."}
        own = dict(self.named_parameters())
        for key, value in hf.items():
            name = key.removeprefix("transformer.")
            for old, new in names.items():
                name = name.replace(old, new)
            if name in ("wte.weight", "wpe.weight"):
                src = value
            else:
                src = value.T if value.ndim == 2 else value  # nn.Linear keeps (out, in)
            own[name].copy_(torch.from_numpy(np.array(src)))  # a writable copy
            own.pop(name)
        if own:
            raise ValueError(f"parameters not loaded: {sorted(own)}")


class TorchTrainer:
    """One training step as jaxlm's: mean next-token cross-entropy, global-norm clip, AdamW with
    decay on matrices only, learning rate from jaxlm's schedule."""

    def __init__(self, model: TorchGPT, cfg: OptimConfig, schedule: optax.Schedule,
                 total_steps: int) -> None:
        if cfg.name != "adamw":
            raise ValueError("TorchTrainer implements optim.name=adamw only")
        self.model, self.cfg, self.step_count = model, cfg, 0
        self.lrs = np.asarray(schedule(np.arange(total_steps)), np.float64)  # step s: schedule(s)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=0.0, betas=(cfg.b1, cfg.b2), eps=cfg.eps, foreach=True,
        )

    def step(self, inputs_bt: torch.Tensor, targets_bt: torch.Tensor) -> torch.Tensor:
        """One update; returns the (detached) loss before it."""
        lr = float(self.lrs[self.step_count])
        for group in self.opt.param_groups:
            group["lr"] = lr
        logits = self.model(inputs_bt)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets_bt.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.opt.step()
        self.step_count += 1
        return loss.detach()
