"""Run records: metrics.jsonl and TensorBoard event files (the progress bar: jaxlm.progress).

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from jaxlm.progress import log, progress  # noqa: F401 - where callers find them
from jaxlm.rundir import METRICS_FILE, TENSORBOARD_DIR  # the run directory owns the names


def _clean(v: Any) -> Any:
    v = float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int, str)) else v
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class MetricsWriter:
    def __init__(self, workdir: pathlib.Path, enabled: bool = True):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / TENSORBOARD_DIR))

    def truncate_after(self, step: int) -> None:
        """Drops step records past `step` (written after the checkpoint a resume starts from)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if "step" not in rec or rec["step"] <= step:
                keep.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        tmp.replace(self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Appends one JSON line; numeric fields of step records also go to TensorBoard."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = record.get("step")
        if self._tb is not None and isinstance(step, int):
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(tensorboard_tag(k), v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


_PERF_KEYS = ("tokens_per_sec", "step_time_sec", "mfu", "compile_time_sec", "tokens_seen")


def tensorboard_tag(key: str) -> str:
    """TensorBoard groups: eval/*, perf/* (throughput, step time, MFU, compile) and train/*."""
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_"):]
    return ("perf/" if key in _PERF_KEYS else "train/") + key


def load_metrics(workdir: str | pathlib.Path) -> list[dict]:
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["MetricsWriter", "progress", "log", "load_metrics", "tensorboard_tag", "METRICS_FILE"]
