"""benchmarks/load.py and the RESULTS.md gate: other processes' CPU use is measured per timed
run, and a loaded machine's numbers are not written."""

from __future__ import annotations

import sys

import pytest

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import load  # noqa: E402


def _fake_clock(monkeypatch, busy: list[float], own: list[float], wall: list[float]):
    monkeypatch.setattr(load, "_busy_seconds", lambda: busy.pop(0))
    monkeypatch.setattr(load, "_own_seconds", lambda: own.pop(0))
    monkeypatch.setattr(load.time, "perf_counter", lambda: wall.pop(0))


def test_others_cores_is_machine_busy_minus_own_over_wall(monkeypatch):
    # 2 s of wall; the machine was busy 3.0 CPU-s, of which this process used 1.9 -> 0.55 cores
    _fake_clock(monkeypatch, busy=[100.0, 103.0], own=[10.0, 11.9], wall=[5.0, 7.0])
    m = load.LoadMeter()
    with m.timed():
        pass
    assert m.others_cores == [pytest.approx(0.55)]
    assert not m.quiet() and "0.55 cores" in m.line()


def test_quiet_run_passes_and_negative_noise_is_clamped(monkeypatch):
    _fake_clock(monkeypatch, busy=[0.0, 1.98, 5.0, 6.0], own=[0.0, 2.0, 2.0, 2.95],
                wall=[0.0, 1.0, 1.0, 2.0])
    m = load.LoadMeter()
    for _ in range(2):
        with m.timed():
            pass
    assert m.others_cores[0] == 0.0 and m.others_cores[1] == pytest.approx(0.05)
    assert m.quiet()


def test_no_measurement_is_not_quiet():
    assert not load.LoadMeter().quiet()


def test_the_meter_sees_real_cpu_time():
    """Unmocked: a block that spins on this process's CPU is counted as its own, not as others'."""
    import time

    m = load.LoadMeter()
    with m.timed():
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:
            pass
    assert len(m.others_cores) == 1 and m.others_cores[0] >= 0.0


def test_append_results_refuses_a_loaded_machine(monkeypatch, tmp_path):
    import _common

    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    monkeypatch.setattr(_common, "RESULTS", results)
    loaded, quiet = load.LoadMeter([0.02, 0.6]), load.LoadMeter([0.01, 0.03])
    with pytest.raises(SystemExit, match="not appending.*max 0.60"):
        _common.append_results("a title", "| table |", meter=loaded)
    assert results.read_text() == "# results\n"
    _common.append_results("a title", "| table |", meter=quiet)
    text = results.read_text()
    assert "a title" in text and "| table |" in text and "max 0.03" in text


def test_a_short_noisy_run_is_weighed_by_its_length():
    """A 0.1 s run moves by a 10 ms tick per 0.1 core: judged over all runs together, with a
    looser bound for any single run."""
    m = load.LoadMeter(others_cores=[0.0, 0.3, 0.0], walls=[10.0, 0.1, 10.0])
    assert m.overall == pytest.approx(0.03 / 20.1)
    assert m.quiet()
    assert not load.LoadMeter(others_cores=[0.0, 0.6], walls=[10.0, 0.1]).quiet()  # one run
    assert not load.LoadMeter(others_cores=[0.2, 0.2], walls=[5.0, 5.0]).quiet()  # altogether
