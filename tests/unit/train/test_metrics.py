"""jaxlm.train.metrics: each metrics.jsonl record is written whole or not at all, a full disk
is one line naming the file, and a damaged metrics.jsonl is read without a crash."""

from __future__ import annotations

import errno
import json

import pytest

from jaxlm.errors import JaxlmError
from jaxlm.train.metrics import METRICS_FILE, MetricsWriter, load_metrics

from helpers import tensorboard_tags


class _FullDisk:
    """A file object whose writes fail with ENOSPC after writing `room` more bytes (the first
    part of a record lands, as on a real disk that fills up mid-write)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            if self.room:
                self.f.write(bytes(data[:self.room]))
                self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_disk_full_leaves_no_half_written_record(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write({"step": 1, "loss": 2.5})
    before = (tmp_path / METRICS_FILE).read_bytes()
    writer._file = _FullDisk(writer._file, room=7)
    with pytest.raises(JaxlmError) as info:
        writer.write({"step": 2, "loss": 2.25, "learning_rate": 1e-3})
    msg = str(info.value)
    assert "\n" not in msg
    assert str(tmp_path / METRICS_FILE) in msg and "No space left on device" in msg, msg
    assert (tmp_path / METRICS_FILE).read_bytes() == before  # the 7 bytes were cut off again
    writer.close()  # releases the files without a second error
    assert load_metrics(tmp_path) == [{"step": 1, "loss": 2.5}]


class _FullEvents:
    """tensorboardX's EventsWriter on a full disk."""

    def write_event(self, event=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    flush = close = write_event


def test_tensorboard_disk_full_is_one_line(tmp_path):
    """The event file was written from tensorboardX's own thread: a full disk was a thread
    traceback, then a second one from close()."""
    writer = MetricsWriter(tmp_path)
    events_file = writer._tb.path
    assert events_file.parent == tmp_path / "tensorboard"
    writer._tb._w = _FullEvents()
    with pytest.raises(JaxlmError) as info:
        writer.write({"step": 3, "loss": 2.0})
    msg = str(info.value)
    assert str(events_file) in msg and "No space left on device" in msg, msg
    writer.close()  # the error above is the one reported
    assert load_metrics(tmp_path) == [{"step": 3, "loss": 2.0}]  # the JSON line is whole


def test_tensorboard_flush_failure_at_close_is_one_line(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer._tb._w = _FullEvents()
    with pytest.raises(JaxlmError, match="No space left on device"):
        writer.close()


def test_records_reach_tensorboard(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write({"event": "start", "params": 10})
    writer.write({"step": 1, "loss": 2.5, "tokens_per_sec": 10.0, "eval_loss": 2.0})
    writer.close()
    assert tensorboard_tags(tmp_path / "tensorboard") == {"train/loss", "perf/tokens_per_sec", "eval/loss"}


def _damaged(path) -> None:
    lines = [json.dumps({"event": "start"}), json.dumps({"step": 1, "loss": 3.0}),
             json.dumps({"step": 2, "loss": 2.9})]
    path.write_bytes("\n".join(lines).encode() + b"\n{\"step\": 3, \"lo\xff\xfe\n"
                     + json.dumps({"step": 3, "loss": 2.8}).encode() + b"\n[1, 2]\n"
                     + b"{\"step\": 4, \"loss\"")  # cut short by a crash or a full disk


def test_resume_drops_damaged_lines_with_one_warning(tmp_path):
    """Invalid UTF-8 in metrics.jsonl was a UnicodeDecodeError traceback on resume."""
    _damaged(tmp_path / METRICS_FILE)
    warnings = []
    writer = MetricsWriter(tmp_path)
    writer.truncate_after(2, warnings.append)
    writer.write({"step": 3, "loss": 2.7})
    writer.close()
    assert len(warnings) == 1 and str(tmp_path / METRICS_FILE) in warnings[0], warnings
    assert "dropped 3 damaged line(s)" in warnings[0] and "line 4, 6, 7" in warnings[0]
    assert load_metrics(tmp_path) == [{"event": "start"}, {"step": 1, "loss": 3.0},
                                      {"step": 2, "loss": 2.9}, {"step": 3, "loss": 2.7}]


def test_load_metrics_skips_damaged_lines(tmp_path):
    _damaged(tmp_path / METRICS_FILE)
    assert [r.get("step") for r in load_metrics(tmp_path)] == [None, 1, 2, 3]


def test_tensorboard_events_without_importing_torch(tmp_path):
    """tensorboardX's package imports torch (1-2 s of every start where torch is installed);
    jaxlm's event writer does not, and a later `import tensorboardX` is still the whole package."""
    import subprocess
    import sys

    from helpers import REPO_ROOT

    code = ("import pathlib, sys; from jaxlm.train.metrics import MetricsWriter; "
            f"w = MetricsWriter(pathlib.Path({str(tmp_path)!r})); w.write({{'step': 1, 'loss': 2.0}}); "
            "w.close(); print('torch' in sys.modules); import tensorboardX; "
            "print(hasattr(tensorboardX, 'SummaryWriter'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]
    assert tensorboard_tags(tmp_path / "tensorboard") == {"train/loss"}
