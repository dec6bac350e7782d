"""Typed results of the scaling fits: small frozen records that write themselves as JSON.

Every record lists its JSON keys in order (`_items`); `to_json()` turns it into the JSON-ready
dict that fit.json holds (numpy values to Python ones, NaN and inf to null). A record also reads
like that dict (`fit["alpha"]["value"]`, `"E" in fit`, `fit.get("interval")`), with the
in-memory values (records, not their JSON): code written against the dict results keeps
working. Attributes (`fit.alpha.value`) are the typed way in. Bootstrap samples and other
working arrays are attributes only, never JSON keys.
"""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import Any, Iterator, Optional

import numpy as np


def to_json(obj: Any) -> Any:
    """JSON-ready Python values: records through `to_json()`, `_`-prefixed dict keys dropped,
    numpy arrays and scalars to lists, floats and ints, non-finite floats to None."""
    if isinstance(obj, Record):
        return obj.to_json()
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class Record(collections.abc.Mapping):
    """Base of the fit records (frozen dataclasses): the JSON view and a read-only mapping
    over the same keys. Subclasses define `_items()`: (key, value) pairs in JSON order, keys
    whose value is absent (e.g. no bootstrap interval) left out."""

    def _items(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def to_json(self) -> dict:
        return {k: to_json(v) for k, v in self._items()}

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items():
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self._items()])

    def __len__(self) -> int:
        return len(self._items())


def _present(rec: Record, names: Optional[list[str]] = None) -> list[tuple[str, Any]]:
    """The dataclass fields (or `names`) of rec that are not None, in order."""
    names = names or [f.name for f in dataclasses.fields(rec)]
    return [(n, getattr(rec, n)) for n in names if getattr(rec, n) is not None]


@dataclasses.dataclass(frozen=True)
class Estimate(Record):
    """A fitted constant and its percentile-bootstrap interval (None: fitted without a
    bootstrap; NaN bounds: too few finite resamples). JSON: {"value": v, "interval": [lo, hi]}."""

    value: float
    interval: Optional[tuple[float, float]] = None

    def _items(self) -> list[tuple[str, Any]]:
        return _present(self)


@dataclasses.dataclass(frozen=True)
class Prediction(Record):
    """Predictions at compute budgets C (FLOPs), one entry per budget: the compute-optimal
    N_opt and D_opt and/or the loss, with per-budget [lo, hi] intervals when the fit has a
    bootstrap. Absent quantities are None (and not in the JSON)."""

    C: list[float]
    N_opt: Optional[list[float]] = None
    D_opt: Optional[list[float]] = None
    loss: Optional[list[float]] = None
    N_opt_interval: Optional[list[list[float]]] = None
    D_opt_interval: Optional[list[list[float]]] = None
    loss_interval: Optional[list[list[float]]] = None

    def _items(self) -> list[tuple[str, Any]]:
        return _present(self)


__all__ = ["Record", "Estimate", "Prediction", "to_json"]
