"""Typed run configuration (the defaults are the quickstart run, configs/quickstart.yaml): frozen dataclass schemas, YAML + dotted-override loading, validation.

OmegaConf does the parsing, merging and type conversion against the schemas (so an unknown key
or a value of the wrong type is rejected with the key's full dotted name); `validate` adds the
cross-field rules a type system cannot express. Everything raises `JaxlmError` with one line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from typing import Any, Optional, Sequence

import yaml

from jaxlm.config_rules import (  # noqa: F401 - the enumerations and rules, re-exported
    ATTENTION_IMPLS, DTYPES, FAMILIES, MLPS, NORMS, OBJECTIVES, OPTIMIZERS, POOLINGS, POSITIONS,
    DECAY_SHAPES, REMAT_POLICIES, SCHEDULES, SP_MODEL_TYPES, TOKENIZERS, compute_dtype, config_warnings,
    is_causal, pooling, validate,
)
from jaxlm.errors import JaxlmError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str = "transformer"  # transformer | lstm
    vocab_size: Optional[int] = None  # None: the tokenizer's vocabulary size
    d_model: int = 128  # LSTM: hidden size (and embedding width unless model.embed_dim)
    embed_dim: Optional[int] = None  # LSTM: token-embedding width (layer 0's input); None: d_model
    n_layers: int = 4  # transformer blocks / stacked LSTM layers
    n_heads: int = 4  # attention heads (d_model must be divisible by it)
    n_kv_heads: Optional[int] = None  # None: n_heads (multi-head); fewer: grouped-query attention
    d_ff: Optional[int] = None  # None: 4*d_model (gelu) or 8/3*d_model rounded to 64 (swiglu)
    max_seq_len: int = 256  # learned positions / longest sequence the model accepts
    position: str = "learned"  # learned | rope
    rope_theta: float = 10000.0  # RoPE base frequency (position=rope)
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5  # epsilon of the LayerNorm / RMSNorm layers
    mlp: str = "gelu"  # gelu | swiglu
    tie_embeddings: bool = True  # the output projection reuses the token embedding matrix
    use_bias: bool = True  # transformer: biases in the attention, MLP and LayerNorm layers
    qkv_bias: bool = False  # transformer: query/key/value biases even with use_bias=false (Qwen2)
    dropout: float = 0.0  # on embeddings and residual branches (LSTM: between layers); 0: off
    init_std: float = 0.02  # std of the normal weight init (residual outputs: / sqrt(2*n_layers))
    # μP (transformer): the d_model at which μP equals the standard parametrization; wider
    # models scale init, per-group learning rates, attention and logits (docs/mup.md)
    mup_base_width: Optional[int] = None  # None: standard parametrization
    dtype: str = "auto"  # compute dtype: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16 | float16
    param_dtype: str = "float32"  # dtype of the parameters and optimizer state
    attention_impl: str = "auto"  # auto|xla|cudnn|splash|blockwise: see jaxlm/models/attention.py
    remat: str = "none"  # none | full | dots_saveable: recompute block activations in backward
    scan_layers: bool = False  # transformer: one nn.scan over stacked layers (flat compile time)
    # what the model is trained for (transformer only for mlm/classify): clm = next-token LM;
    # mlm = BERT-style masked LM (bidirectional encoder); classify = sequence classification
    objective: str = "clm"  # clm | mlm | classify
    causal: Optional[bool] = None  # causal attention; None: False for mlm, True otherwise
    num_labels: int = 2  # classify: classes
    pooling: str = "auto"  # classify: last | first | mean; auto: last (causal) / mean (encoder)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # stdlib | a text or .jsonl file, directory or glob | tfds:NAME | hf:PATH (a Hugging Face
    # dataset from local parquet/arrow/json/csv files or a save_to_disk folder)
    corpus: str = "stdlib"  # the text (or labelled rows) to train on
    # the field holding the text: of each JSON Lines (.jsonl) record, of a tfds dataset's
    # examples, of a labelled CSV's rows
    text_key: str = "text"
    train_split: str = "train"  # tfds / hf (a split of a DatasetDict)
    eval_split: str = "validation"  # tfds / hf (if absent: validation_fraction of train)
    validation_fraction: float = 0.05  # stdlib / local text: share of files held out
    tfds_data_dir: Optional[str] = None  # tfds data directory; None: tfds's default
    tfds_download: bool = False  # allow tfds to download a registered dataset
    cache_dir: Optional[str] = None  # local text / hf data prepared here; None: ~/.cache/jaxlm
    seq_len: int = 256  # tokens per training row (documents packed back to back, EOS between)
    tokenizer: str = "byte"  # byte | sentencepiece | hf (a Hugging Face tokenizer folder)
    hf_tokenizer: Optional[str] = None  # data.tokenizer=hf: a folder with tokenizer.json
    sp_model: Optional[str] = None  # an existing SentencePiece .model file (else trained)
    sp_vocab_size: int = 4096  # vocabulary size of a SentencePiece model trained here
    sp_model_type: str = "bpe"  # bpe | unigram
    sp_train_chars: int = 5_000_000  # characters sampled from the train split to train it
    seed: int = 0  # shuffle order
    label_key: str = "label"  # model.objective=classify: the label field (CSV/JSONL/tfds)
    shuffle_window: int = 1024  # packed rows shuffled together (mixes long documents); 0: off
    # multi-host reading; one host: the same stream either way (docs/multihost_input.md)
    input: str = "per_host"  # per_host: each host packs its 1/P of the docs | global: all, any P


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # adamw | adafactor | lion | sgd
    lr: float = 2e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | linear | constant | wsd (after warmup)
    # wsd (warmup-stable-decay): the share of train.steps at the end spent decaying to
    # min_lr_ratio * lr (the lr is constant from the warmup until then)
    decay_fraction: float = 0.2  # wsd: the decay's share of train.steps
    decay_shape: str = "linear"  # wsd: linear | cosine | 1-sqrt
    warmup_steps: int = 50  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # final lr = min_lr_ratio * lr
    weight_decay: float = 0.1  # applied to matrices only, not biases, norms or vectors
    b1: float = 0.9  # adamw | lion: beta1
    b2: float = 0.95  # adamw | lion: beta2
    eps: float = 1e-8  # adamw: epsilon added to the denominator
    momentum: float = 0.9  # sgd
    grad_clip: float = 1.0  # global-norm clipping; 0 disables


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 900  # optimizer updates in the run (the lr schedule's length)
    batch_size: int = 16  # global, in sequences
    seed: int = 0  # parameter initialization and dropout
    log_every: int = 10  # steps between training log lines
    eval_every: int = 300  # 0: only at the end
    eval_batches: int = 10  # batches per periodic eval; the final eval uses final_eval_batches
    final_eval_batches: int = 100  # 0: the whole eval split
    checkpoint_every: int = 300  # 0: only at the end
    # checked at log steps, by process 0's clock, so that every host saves the same step
    checkpoint_every_minutes: float = 0.0  # also save once this long since the last save; 0: off
    keep_checkpoints: int = 3  # the newest ones; the one with the best eval loss is kept too
    # steps checkpointed besides every checkpoint_every (e.g. a wsd trunk's branch points; keep
    # them with keep_checkpoints)
    checkpoint_at: list[int] = dataclasses.field(default_factory=list)  # steps, e.g. [400, 800]
    nonfinite: str = "skip"  # skip | halt: on a non-finite loss or gradient norm
    # nonfinite=skip: stop the run (exit 3) after this many consecutive skipped updates; 0: never
    nonfinite_patience: int = 10
    debug_nan_steps: list[int] = dataclasses.field(default_factory=list)  # testing: NaN there
    grad_accum: int = 1  # microbatches per update (batch_size is the whole update's batch)
    # fine-tuning: a fresh run starts from these weights, a Hugging Face GPT-2 / Llama / Mistral /
    # Qwen2 folder or a jaxlm run directory (its model must match model.*); ignored when resuming
    init_from: Optional[str] = None
    # cooldown branch: a fresh run starts from RUN_DIR's checkpoint at STEP (state and data
    # position), e.g. a constant-lr trunk, and decays from there (optim.schedule=wsd); ignored
    # when resuming
    branch_from: Optional[str] = None  # RUN_DIR@STEP
    samples: int = 3  # generated samples printed at the end
    sample_prompt: str = "def "  # prompt of the end-of-run samples
    sample_tokens: int = 200  # tokens per sample (transformer: capped by model.max_seq_len)
    sample_temperature: float = 0.8  # sampling temperature; 0: greedy
    mask_prob: float = 0.15  # model.objective=mlm: share of tokens selected (80/10/10 corrupted)
    freeze_backbone: bool = False  # model.objective=classify: train only the classifier head
    # MFU denominator: peak FLOP/s of one device; None: the table in jaxlm.flops (accelerators)
    # or a measured float32 matmul roof (CPU)
    peak_flops: Optional[float] = None
    prefetch: int = 2  # batches placed on the devices ahead of the step that uses them; 0: off


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices (of a slice) not used by the other axes
    fsdp: int = 1  # devices the batch and every parameter are sharded over (FSDP / ZeRO-3)
    context: int = 1  # devices the sequence is split over (context parallel; data.seq_len must divide)
    tensor: int = 1  # devices heads, MLP width and vocabulary are split over (tensor parallel)
    dcn_data: int = -1  # slices the data axis spans (multi-slice); -1: slices not used by dcn_fsdp
    dcn_fsdp: int = 1  # slices the fsdp axis spans (multi-slice); mesh.fsdp is within a slice


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host: all unset = auto-detect (TPU pod slices, SLURM, Open MPI) or single process."""

    coordinator_address: Optional[str] = None  # host:port of process 0
    num_processes: Optional[int] = None  # processes in the job
    process_id: Optional[int] = None  # this process's index, 0 .. num_processes-1
    auto: bool = True  # initialize when a multi-host cluster is detected and nothing is set
    initialization_timeout: int = 300  # seconds to wait for all processes


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)


def _omegaconf() -> tuple[Any, Any]:
    """(OmegaConf, omegaconf.errors), imported when a config is parsed: building models and
    training from Python needs only the dataclasses, not OmegaConf."""
    import omegaconf  # noqa: PLC0415

    return omegaconf.OmegaConf, omegaconf.errors


def _oc_error(e: Exception, source: str) -> JaxlmError:
    _, oc_errors = _omegaconf()
    key = getattr(e, "full_key", None)
    msg = str(getattr(e, "msg", None) or e).splitlines()[0]
    where = f" (in {source})" if source else ""
    if isinstance(e, oc_errors.ConfigKeyError):
        return JaxlmError(f"unknown config key '{key}'{where}: {msg}")
    if not key:  # OmegaConf names no key: do not print 'None'
        return JaxlmError(f"bad config{where}: {msg}")
    return JaxlmError(f"bad value for config key '{key}'{where}: {msg}")


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list"}.get(type(value), f"the value {value!r}")


def _check_shape(data: Any, source: str, cls: Optional[type] = None,
                 prefix: str = "") -> None:
    """What OmegaConf reports without a key ('None': a section given as a list or a number) or
    with a TypeError (a mapping for a list key), reported with the key's full dotted name."""
    cls = cls or RunConfig
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    where = f" (in {source})" if source else ""
    for key, value in data.items():
        hint, name = hints.get(key), f"{prefix}{key}"  # unknown keys: OmegaConf names them
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise JaxlmError(f"bad value for config key '{name}'{where}: it is a section of "
                                 f"keys ({name}.KEY=VALUE), not {_kind(value)}")
            _check_shape(value, source, hint, name + ".")
        elif typing.get_origin(hint) is list and isinstance(value, dict):
            raise JaxlmError(f"bad value for config key '{name}'{where}: expected a list, "
                             f"not {_kind(value)}")


class _YamlLoader(yaml.SafeLoader):
    """safe_load without YAML 1.1 timestamps: `2024-01-01` stays the string it is in YAML 1.2
    (and in OmegaConf's own loader, which parses the overrides), not a date OmegaConf rejects."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read_yaml(path: str) -> dict:
    p = pathlib.Path(path)
    if not p.is_file():
        raise JaxlmError(f"config file not found: {path}")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_YamlLoader)  # noqa: S506
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise JaxlmError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JaxlmError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _parse_overrides(overrides: Sequence[str]) -> Any:
    OmegaConf, oc_errors = _omegaconf()
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise JaxlmError(f"override '{o}' is not of the form key.sub=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (oc_errors.OmegaConfBaseException, yaml.YAMLError):
        pass
    for o in overrides:  # name the one at fault
        try:
            OmegaConf.from_dotlist([o])
        except (oc_errors.OmegaConfBaseException, yaml.YAMLError) as e:
            why = str(getattr(e, "problem", None) or e).splitlines()[0]
            raise JaxlmError(f"could not parse override '{o}' as YAML: {why}") from None
    raise JaxlmError(f"could not parse overrides {list(overrides)}")


def _layer(data: Any, source: str) -> Any:
    """A mapping (YAML file, overrides) as an OmegaConf layer, its shape checked first."""
    OmegaConf, oc_errors = _omegaconf()
    _check_shape(data, source)
    try:
        return OmegaConf.create(data)
    except oc_errors.OmegaConfBaseException as e:  # a value OmegaConf cannot hold (a set, ...)
        raise _oc_error(e, source) from None


def _merge(cfg: Any, layers: Sequence[tuple[Any, str]]) -> Any:
    OmegaConf, oc_errors = _omegaconf()
    for data, source in layers:
        layer = _layer(data, source)
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except oc_errors.OmegaConfBaseException as e:
            raise _oc_error(e, source) from None
    return cfg


def _override_layers(overrides: Sequence[str], source: str) -> list[tuple[Any, str]]:
    OmegaConf, _ = _omegaconf()
    return [(OmegaConf.to_container(_parse_overrides(overrides)), source)] if overrides else []


def check_overrides(overrides: Sequence[str], source: str) -> None:
    """Raises the one-line error `load_config` would for these overrides' keys and types (no
    cross-field validation), naming `source` as where they come from (e.g. a sweep spec key)."""
    OmegaConf, _ = _omegaconf()
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(cfg, False)
    _merge(cfg, _override_layers(overrides, source))


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Builds a validated RunConfig from defaults, an optional YAML file and `a.b=value` overrides."""
    OmegaConf, oc_errors = _omegaconf()
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(cfg, False)
    layers = [(_read_yaml(path), path)] if path else []
    layers += _override_layers(overrides, "command-line overrides")
    cfg = _merge(cfg, layers)
    try:
        run = OmegaConf.to_object(cfg)
    except oc_errors.OmegaConfBaseException as e:
        raise _oc_error(e, "") from None
    validate(run)
    return run


def from_dict(data: dict) -> RunConfig:
    """A validated RunConfig from a nested dict (e.g. a saved config.yaml)."""
    OmegaConf, oc_errors = _omegaconf()
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(cfg, False)
    cfg = _merge(cfg, [(data, "")])
    try:
        run = OmegaConf.to_object(cfg)
    except oc_errors.OmegaConfBaseException as e:
        raise _oc_error(e, "") from None
    validate(run)
    return run


def to_yaml(cfg: RunConfig) -> str:
    OmegaConf, _ = _omegaconf()
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def replace(cfg: Any, **changes: Any) -> Any:
    """dataclasses.replace over dotted keys: replace(run, **{'model.vocab_size': 259})."""
    nested: dict[str, dict] = {}
    flat = {}
    for k, v in changes.items():
        head, _, rest = k.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)
