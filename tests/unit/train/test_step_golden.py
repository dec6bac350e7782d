"""Golden values: three train steps of a fixed tiny GPT on a fixed batch, as recorded before the
issue-14 restructuring (jax 0.10.2 and 0.12.0.1 gave the same digits on CPU).

If this fails after a change that should not change numbers (a refactor, a module move), the
change altered the computation: the model's initialization, the loss, the optimizer chain, the
schedule or the step. If the change is meant to alter numbers (a new default, a fixed bug), say
so in the commit and record the new values here."""

from __future__ import annotations

import numpy as np
import pytest

REFERENCE = [  # per step: loss, grad_norm, learning_rate (the step's, before its update)
    {"loss": 4.127933502197266, "grad_norm": 1.4350152015686035, "learning_rate": 0.0},
    {"loss": 4.127933502197266, "grad_norm": 1.4350152015686035,
     "learning_rate": 0.0020000000949949026},
    {"loss": 3.957934617996216, "grad_norm": 1.0711545944213867,
     "learning_rate": 0.0019457234302535653},
]


def test_three_steps_match_the_recorded_values():
    from jaxlm import sharding
    from jaxlm.config import ModelConfig, OptimConfig, RunConfig
    from jaxlm.models import build_model
    from jaxlm.train.optim import build_optimizer, schedule
    from jaxlm.train.state import init_state, state_shardings
    from jaxlm.train.step import compile_steps

    cfg = RunConfig(model=ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4,
                                      max_seq_len=16), optim=OptimConfig(warmup_steps=1))
    model, mesh = build_model(cfg.model), sharding.make_mesh(cfg.mesh)
    opt, lr = build_optimizer(cfg.optim, 10), schedule(cfg.optim, 10)
    _, shardings = state_shardings(model, opt, 16, mesh)
    step, _ = compile_steps(model, opt, lr, shardings, mesh)
    state, _ = init_state(model, opt, seed=0, seq_len=16, mesh=mesh)
    ids = np.random.default_rng(0).integers(0, 61, (4, 17)).astype(np.int32)
    batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "mask": np.ones((4, 16), bool)}
    for i, want in enumerate(REFERENCE):
        state, metrics = step(state, batch)
        got = {k: float(metrics[k]) for k in want}
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), (
            f"step {i + 1}: {got} != recorded {want}; see this module's docstring")
