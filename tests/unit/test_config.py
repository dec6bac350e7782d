"""Config loading: defaults, YAML files, dotted overrides, validation errors, round trips."""

from __future__ import annotations

import dataclasses
import glob

import pytest
import yaml

from jaxlm import config as config_lib
from jaxlm.config import RunConfig, from_dict, load_config, to_yaml
from jaxlm.errors import JaxlmError

from helpers import REPO_ROOT


def _error(overrides=(), path=None) -> str:
    with pytest.raises(JaxlmError) as info:
        load_config(path, list(overrides))
    msg = str(info.value)
    assert "\n" not in msg, f"error message should be one line: {msg!r}"
    return msg


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg == RunConfig()
    assert cfg.model.family == "transformer"
    assert cfg.model.vocab_size is None  # resolved from the tokenizer later
    assert cfg.data.corpus == "stdlib"
    assert cfg.data.tokenizer == "byte"
    assert cfg.data.seq_len <= cfg.model.max_seq_len


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.d_model = 1  # type: ignore[misc]


def test_overrides_apply_with_type_conversion():
    cfg = load_config(None, ["optim.lr=3e-4", "model.n_layers=2", "model.tie_embeddings=false",
                             "data.corpus=/some/dir", "model.n_kv_heads=2", "mesh.data=1"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(3e-4)
    assert isinstance(cfg.model.n_layers, int) and cfg.model.n_layers == 2
    assert cfg.model.tie_embeddings is False
    assert cfg.data.corpus == "/some/dir"
    assert cfg.model.n_kv_heads == 2
    assert cfg.mesh.data == 1
    # everything not overridden keeps its default
    assert cfg.model.d_model == RunConfig().model.d_model
    assert cfg.train == RunConfig().train


def test_later_override_wins():
    cfg = load_config(None, ["model.n_layers=2", "model.n_layers=3"])
    assert cfg.model.n_layers == 3


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    # `3e-4` is a *string* to YAML 1.1's safe_load; the schema must still make it a float.
    p.write_text("model:\n  n_layers: 2\n  d_model: 64\noptim:\n  lr: 3e-4\n")
    cfg = load_config(str(p), ["model.n_layers=1"])
    assert cfg.model.d_model == 64
    assert cfg.model.n_layers == 1  # the override beats the file
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(3e-4)


def test_empty_yaml_file_means_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_config(str(p)) == RunConfig()


@pytest.mark.parametrize(
    "overrides, must_name",
    [
        (["model.foo=1"], "model.foo"),
        (["nosuchsection.x=1"], "nosuchsection"),
        (["model.d_model=abc"], "model.d_model"),
        (["train.steps=1.5"], "train.steps"),
        (["model.tie_embeddings=maybe"], "model.tie_embeddings"),
        (["model.d_model=30"], "model.d_model"),  # 30 % 4 heads
        (["model.n_kv_heads=3"], "model.n_kv_heads"),  # 4 heads % 3
        (["data.seq_len=512"], "data.seq_len"),  # > max_seq_len 256
        (["model.norm=batchnorm"], "model.norm"),
        (["model.family=gru"], "model.family"),
        (["optim.name=rmsprop"], "optim.name"),
        (["data.tokenizer=wordpiece"], "data.tokenizer"),
        (["model.dropout=1.5"], "model.dropout"),
        (["optim.warmup_steps=5000"], "optim.warmup_steps"),
        (["data.validation_fraction=0"], "data.validation_fraction"),
        (["train.batch_size=0"], "train.batch_size"),
        (["mesh.data=0"], "mesh.data"),
        (["model.d_model"], "model.d_model"),  # no '='
        (["=3"], "=3"),
    ],
)
def test_bad_overrides_name_the_key(overrides, must_name):
    msg = _error(overrides)
    assert must_name in msg, msg


@pytest.mark.parametrize("key", ["context", "dcn_data", "dcn_fsdp"])
def test_new_mesh_sizes_are_checked(key):
    assert getattr(load_config(None, [f"mesh.{key}=2"]).mesh, key) == 2
    msg = _error([f"mesh.{key}=0"])
    assert f"'mesh.{key}' must be a positive size or -1" in msg, msg


def test_divisibility_messages_name_both_keys():
    msg = _error(["model.d_model=30"])
    assert "model.d_model" in msg and "model.n_heads" in msg
    msg = _error(["model.n_kv_heads=3"])
    assert "model.n_heads" in msg and "model.n_kv_heads" in msg
    msg = _error(["data.seq_len=512"])
    assert "data.seq_len" in msg and "model.max_seq_len" in msg


def test_divisibility_only_checked_for_transformers():
    cfg = load_config(None, ["model.family=lstm", "model.d_model=30"])
    assert cfg.model.d_model == 30


def test_embed_dim_rules():
    cfg = load_config(None, ["model.family=lstm", "model.embed_dim=16",
                             "model.tie_embeddings=false"])
    assert cfg.model.embed_dim == 16 and cfg.model.d_model == 128
    assert "lstm family only" in _error(["model.embed_dim=16"])
    msg = _error(["model.family=lstm", "model.embed_dim=16"])
    assert "model.embed_dim" in msg and "model.tie_embeddings=false" in msg
    assert "model.embed_dim" in _error(["model.family=lstm", "model.embed_dim=0"])


def test_override_without_equals_is_error():
    msg = _error(["optim.lr"])
    assert "optim.lr" in msg and "key.sub=value" in msg


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = _error(path=str(path))
    assert str(path) in msg and "not found" in msg


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  d_model: [1, 2\n  n_layers: :\n")
    msg = _error(path=str(p))
    assert str(p) in msg and "YAML" in msg


def test_yaml_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    msg = _error(path=str(p))
    assert str(p) in msg


def test_yaml_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("model:\n  n_layer: 2\n")
    msg = _error(path=str(p))
    assert "model.n_layer" in msg
    assert str(p) in msg


def test_yaml_wrong_type_names_key_and_file(tmp_path):
    p = tmp_path / "type.yaml"
    p.write_text("train:\n  steps: lots\n")
    msg = _error(path=str(p))
    assert "train.steps" in msg and str(p) in msg



def test_yaml_date_is_a_string_not_a_traceback(tmp_path):
    """YAML 1.1 reads 2024-01-01 as a date, which OmegaConf cannot hold (it raised
    UnsupportedValueType); it is read as the string it is in YAML 1.2 and in the overrides."""
    p = tmp_path / "date.yaml"
    p.write_text("train:\n  seed: 2024-01-01\n")
    msg = _error(path=str(p))
    assert "train.seed" in msg and str(p) in msg and "2024-01-01" in msg
    p.write_text("data:\n  corpus: 2024-01-01\n")
    assert load_config(str(p)).data.corpus == "2024-01-01"
    assert load_config(None, ["data.corpus=2024-01-01"]).data.corpus == "2024-01-01"


def test_yaml_value_omegaconf_cannot_hold_names_the_key(tmp_path):
    p = tmp_path / "set.yaml"
    p.write_text("train:\n  seed: !!set {a, b}\n")
    msg = _error(path=str(p))
    assert "train.seed" in msg and str(p) in msg


@pytest.mark.parametrize("override", ["model.foo=[1,2", "train.debug_nan_steps=[1,2",
                                      "model.d_model={a: 1"])
def test_unparsable_override_names_it(override):
    """An unclosed list raised yaml's ParserError (a traceback)."""
    msg = _error(["model.n_layers=2", override])
    assert f"'{override}'" in msg and "model.n_layers" not in msg, msg


@pytest.mark.parametrize("text, key, kind", [
    ("model: [1, 2]\n", "model", "a list"),
    ("train: 3\n", "train", "the value 3"),
    ("optim:\n", "optim", "empty"),
    ("train:\n  debug_nan_steps: {a: 1}\n", "train.debug_nan_steps", "a mapping"),
])
def test_section_of_the_wrong_kind_names_the_key(tmp_path, text, key, kind):
    """A section given as a list was 'bad value for config key 'None''; a mapping for a list
    key was a TypeError traceback."""
    p = tmp_path / "shape.yaml"
    p.write_text(text)
    msg = _error(path=str(p))
    assert f"config key '{key}'" in msg and str(p) in msg and kind in msg, msg
    assert "None" not in msg


@pytest.mark.parametrize("override, key, data", [
    ("model=[1,2]", "model", {"model": [1, 2]}),
    ("train=7", "train", {"train": 7}),
    ("train.debug_nan_steps={a: 1}", "train.debug_nan_steps", {"train": {"debug_nan_steps": {}}}),
])
def test_override_replacing_a_section_names_the_key(override, key, data):
    msg = _error([override])
    assert f"config key '{key}'" in msg and "command-line overrides" in msg, msg
    assert "None" not in msg
    with pytest.raises(JaxlmError, match=f"config key '{key}'"):
        from_dict(data)

def _variant() -> RunConfig:
    return load_config(None, [
        "model.position=rope", "model.norm=rmsnorm", "model.mlp=swiglu", "model.n_kv_heads=2",
        "model.tie_embeddings=false", "model.use_bias=false", "model.vocab_size=300",
        "optim.lr=3e-4", "optim.eps=1e-8", "data.corpus=tfds:lm1b", "data.sp_model=x.model",
        "train.sample_prompt=import os", "mesh.fsdp=1",
    ])


@pytest.mark.parametrize("make", [RunConfig, _variant], ids=["defaults", "variant"])
def test_to_yaml_round_trip(make):
    cfg = make()
    text = to_yaml(cfg)
    back = from_dict(yaml.safe_load(text))
    assert back == cfg
    # and the dict form matches too
    assert config_lib.to_dict(back) == config_lib.to_dict(cfg)


def test_variant_differs_from_defaults():  # guards the round-trip test against a no-op variant
    assert _variant() != RunConfig()
    assert _variant().model.n_kv_heads == 2


def test_from_dict_validates():
    with pytest.raises(JaxlmError, match="model.d_model"):
        from_dict({"model": {"d_model": 30}})
    with pytest.raises(JaxlmError, match="model.bogus"):
        from_dict({"model": {"bogus": 1}})


def test_replace_dotted():
    cfg = config_lib.replace(RunConfig(), **{"model.vocab_size": 259, "train.steps": 7})
    assert cfg.model.vocab_size == 259 and cfg.train.steps == 7
    assert cfg.model.d_model == RunConfig().model.d_model


def test_quickstart_config_exists():
    assert (REPO_ROOT / "configs" / "quickstart.yaml").is_file()


def test_quickstart_config_equals_defaults():
    # The docs say the quickstart file and the built-in defaults are the same run.
    path = REPO_ROOT / "configs" / "quickstart.yaml"
    if not path.is_file():
        pytest.fail("configs/quickstart.yaml is missing")
    assert load_config(str(path)) == load_config()


CONFIG_FILES = sorted(glob.glob(str(REPO_ROOT / "configs" / "*.yaml")))


@pytest.mark.parametrize("path", CONFIG_FILES or ["<no configs>"],
                         ids=lambda p: p.rsplit("/", 1)[-1])
def test_shipped_configs_load(path):
    if path == "<no configs>":
        pytest.fail("no configs/*.yaml files found")
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    # and they survive the save/load round trip the run directory relies on
    assert from_dict(yaml.safe_load(to_yaml(cfg))) == cfg
