"""Cooldown branches (train.branch_from): bad branches are one-line errors, before anything
is built. (A branch equals the wsd run from the start, bitwise: tests/e2e/test_wsd_sweep.py.)"""

from __future__ import annotations

import pytest

from helpers import EXACT
from jaxlm.config import load_config, to_yaml
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import JaxlmError
from jaxlm.train.loop import train

WSD = ["optim.schedule=wsd", "optim.decay_fraction=0.25", "optim.decay_shape=1-sqrt"]


@pytest.mark.parametrize("extra, match", [
    (["train.branch_from={trunk}@4"], "no checkpoint at step 4"),
    (["train.branch_from={trunk}@6", "optim.decay_fraction=0.5"], "before the branch point 6"),
    (["train.branch_from={trunk}@6", "optim.lr=0.01"], "optim.lr=0.01 \\(trunk: 0.002\\)"),
    (["train.branch_from={trunk}@6", "optim.schedule=cosine"], "schedule=cosine decays"),
])
def test_bad_branches_name_the_fault(tmp_path, extra, match):
    """Refused before anything is built: a trunk with only its config, tokenizer and step
    folders does."""
    trunk = tmp_path / "trunk"
    for step in (3, 6):
        (trunk / "checkpoints" / str(step)).mkdir(parents=True)
    cfg = load_config(None, [*EXACT, "optim.schedule=constant", "model.vocab_size=259"])
    (trunk / "config.yaml").write_text(to_yaml(cfg))
    ByteTokenizer().save(trunk)  # a trunk holds its tokenizer, which the branch takes
    over = [e.format(trunk=trunk) for e in extra]
    with pytest.raises(JaxlmError, match=match):
        train(load_config(None, [*EXACT, *WSD, *over]), tmp_path / "b", quiet=True)


def test_branch_from_form_is_checked():
    with pytest.raises(JaxlmError, match="train.branch_from' must be RUN_DIR@STEP"):
        load_config(None, [*EXACT, "train.branch_from=somewhere"])
    with pytest.raises(JaxlmError, match="not before train.steps"):
        load_config(None, [*EXACT, "train.branch_from=x@8"])
