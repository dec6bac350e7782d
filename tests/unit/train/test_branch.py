"""Cooldown branches (train.branch_from): a wsd branch of a constant-lr trunk is the run
trained with the same wsd schedule from the start, bitwise; bad branches are one-line errors."""

from __future__ import annotations

import pytest

from helpers import EXACT, bits, losses, restore_state, run
from jaxlm.config import load_config, to_yaml
from jaxlm.errors import JaxlmError
from jaxlm.train.loop import train

WSD = ["optim.schedule=wsd", "optim.decay_fraction=0.25", "optim.decay_shape=1-sqrt"]


def test_branch_equals_wsd_run_from_start(tmp_path):
    ref, trunk, branch = tmp_path / "ref", tmp_path / "trunk", tmp_path / "branch"
    run(ref, *WSD)  # 8 steps: constant to step 6, then 2 steps of decay
    run(trunk, "optim.schedule=constant", "train.steps=7", "train.checkpoint_every=0",
        "train.checkpoint_at=[6]")  # checkpoints at 6 and 7 only
    assert sorted(int(p.name) for p in (trunk / "checkpoints").iterdir()) == [6, 7]
    run(branch, *WSD, f"train.branch_from={trunk}@6")
    assert min(losses(branch)) == 7  # the branch's own steps only
    assert {s: losses(ref)[s] for s in (7, 8)} == losses(branch)
    assert bits(restore_state(branch, 8)) == bits(restore_state(ref, 8))
    # resuming the branch from its own checkpoint ignores branch_from
    run(branch, *WSD, f"train.branch_from={trunk}@6", "train.steps=9",
        "optim.decay_fraction=0.33")  # decay start still 6


@pytest.mark.parametrize("extra, match", [
    (["train.branch_from={trunk}@4"], "no checkpoint at step 4"),
    (["train.branch_from={trunk}@6", "optim.decay_fraction=0.5"], "before the branch point 6"),
    (["train.branch_from={trunk}@6", "optim.lr=0.01"], "optim.lr=0.01 \\(trunk: 0.002\\)"),
    (["train.branch_from={trunk}@6", "optim.schedule=cosine"], "schedule=cosine decays"),
])
def test_bad_branches_name_the_fault(tmp_path, extra, match):
    """Refused before anything is built: a trunk with only its config and step folders does."""
    trunk = tmp_path / "trunk"
    for step in (3, 6):
        (trunk / "checkpoints" / str(step)).mkdir(parents=True)
    cfg = load_config(None, [*EXACT, "optim.schedule=constant", "model.vocab_size=259"])
    (trunk / "config.yaml").write_text(to_yaml(cfg))
    over = [e.format(trunk=trunk) for e in extra]
    with pytest.raises(JaxlmError, match=match):
        train(load_config(None, [*EXACT, *WSD, *over]), tmp_path / "b", quiet=True)


def test_branch_from_form_is_checked():
    with pytest.raises(JaxlmError, match="train.branch_from' must be RUN_DIR@STEP"):
        load_config(None, [*EXACT, "train.branch_from=somewhere"])
    with pytest.raises(JaxlmError, match="not before train.steps"):
        load_config(None, [*EXACT, "train.branch_from=x@8"])
