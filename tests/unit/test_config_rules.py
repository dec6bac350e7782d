"""jaxlm.config_rules: validation rules, config warnings and the compute dtype."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from jaxlm import config as config_lib
from jaxlm.config import load_config
from jaxlm.errors import JaxlmError


def test_debug_nan_steps_validated():
    from jaxlm.errors import JaxlmError

    with pytest.raises(JaxlmError, match="train.debug_nan_steps"):
        load_config(None, ["train.debug_nan_steps=[0]"])
    with pytest.raises(JaxlmError, match="train.nonfinite"):
        load_config(None, ["train.nonfinite=ignore"])
    with pytest.raises(JaxlmError, match="train.nonfinite_patience"):
        load_config(None, ["train.nonfinite_patience=-1"])
    assert load_config(None, ["train.nonfinite_patience=0"]).train.nonfinite_patience == 0


def test_config_rules():
    with pytest.raises(JaxlmError, match="model.family=transformer"):
        load_config(None, ["model.objective=mlm", "model.family=lstm"])
    with pytest.raises(JaxlmError, match="model.objective"):
        load_config(None, ["model.objective=seq2seq"])
    with pytest.raises(JaxlmError, match="freeze_backbone"):
        load_config(None, ["train.freeze_backbone=true"])
    with pytest.raises(JaxlmError, match="unset model.causal"):
        load_config(None, ["model.objective=mlm", "model.causal=true"])


# ---------------------------------------------------------------------------------------------
# settings that are valid but probably a mistake


def test_config_warnings():
    cfg = config_lib.load_config(None, ["train.steps=100", "train.eval_every=300",
                                        "model.dtype=bfloat16", "data.seq_len=32"])
    text = "\n".join(config_lib.config_warnings(cfg, "cpu"))
    assert "model.dtype=bfloat16 on CPU" in text
    assert "data.seq_len=32 uses under a quarter of model.max_seq_len=256" in text
    gpu = config_lib.config_warnings(config_lib.load_config(None, ["model.dtype=float32"]), "gpu")
    assert gpu == ["model.dtype=float32 on GPU: bfloat16 compute (float32 params stay) is usually "
                   "2-4x faster; set model.dtype=bfloat16"]
    for platform in ("cpu", "gpu", "tpu"):  # the default (auto) is right everywhere
        assert config_lib.config_warnings(config_lib.load_config(None, []), platform) == []


def test_auto_compute_dtype():
    assert config_lib.compute_dtype("auto", "gpu") == "bfloat16"
    assert config_lib.compute_dtype("auto", "tpu") == "bfloat16"
    assert config_lib.compute_dtype("auto", "cpu") == "float32"
    assert config_lib.compute_dtype("float16", "tpu") == "float16"
    assert config_lib.load_config(None, []).model.dtype == "auto"
    from jaxlm.models.layers import dtype_of

    assert dtype_of("auto") == jnp.float32  # this CPU


@pytest.mark.parametrize("override,message", [
    ("optim.lr=nan", "config key 'optim.lr' must be a finite number; got nan"),
    ("optim.lr=inf", "config key 'optim.lr' must be a finite number; got inf"),
    ("model.init_std=nan", "config key 'model.init_std' must be a finite number; got nan"),
    ("optim.b2=1.5", "config key 'optim.b2' must be in [0, 1); got 1.5"),
    ("optim.b1=-0.1", "config key 'optim.b1' must be in [0, 1); got -0.1"),
    ("optim.eps=-1", "config key 'optim.eps' must be > 0; got -1.0"),
])
def test_non_finite_and_out_of_range_floats_are_refused(override, message):
    with pytest.raises(JaxlmError) as e:
        config_lib.load_config(None, [override])
    assert str(e.value) == message
