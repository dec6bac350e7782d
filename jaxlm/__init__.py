"""jaxlm: train language models and study how they scale, with JAX and Flax."""

from jaxlm import xla_flags

xla_flags.apply_defaults()  # before anything starts JAX's backends; see jaxlm/xla_flags.py


from jaxlm.config import RunConfig, load_config
from jaxlm.errors import JaxlmError
from jaxlm.models import build_model
from jaxlm.train.loop import RunResult, train

__version__ = "0.1.0"

__all__ = ["RunConfig", "load_config", "JaxlmError", "build_model", "train", "RunResult"]
