"""jaxlm: train language models and study how they scale, with JAX and Flax.

The public names below load lazily (PEP 562): `import jaxlm` imports no JAX, and
`import jaxlm.scaling.fit` (pure math) no training stack. Grain, tensorflow-datasets,
SentencePiece, OmegaConf and tensorboardX load only where a run uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# `jaxlm.train` is the function, as it has always been. Loading the (empty) subpackage now keeps
# a later `import jaxlm.train.step` from rebinding the name to the package.
importlib.import_module("jaxlm.train")
globals().pop("train", None)

from jaxlm.version import __version__  # noqa: E402,F401

_LAZY = {  # public name -> the module that defines it
    "RunConfig": "jaxlm.config",
    "load_config": "jaxlm.config",
    "JaxlmError": "jaxlm.errors",
    "build_model": "jaxlm.models",
    "train": "jaxlm.train.loop",
    "RunResult": "jaxlm.train.loop",
}

if TYPE_CHECKING:
    from jaxlm.config import RunConfig, load_config
    from jaxlm.errors import JaxlmError
    from jaxlm.models import build_model
    from jaxlm.train.loop import RunResult, train


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["RunConfig", "load_config", "JaxlmError", "build_model", "train", "RunResult"]
