"""Where jaxlm keeps per-user, per-machine files: the cache directory ($XDG_CACHE_HOME/jaxlm,
default ~/.cache/jaxlm: the CPU matmul roof, compiled executables) and what names a machine
in it (a home directory may be shared by machines with different CPUs)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform


def user_cache_dir(*parts: str) -> pathlib.Path:
    """$XDG_CACHE_HOME/jaxlm/PARTS... (default ~/.cache/jaxlm/...); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base, "jaxlm", *parts)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def host_tag() -> str:
    """A short name for this kind of machine (architecture + CPU model), for caches whose
    contents another CPU must not use: XLA's CPU code is compiled for the host's features."""
    digest = hashlib.sha256(f"{platform.machine()}|{cpu_model()}".encode()).hexdigest()
    return f"{platform.machine() or 'cpu'}-{digest[:12]}"
