"""harness.tracefs's choice of clock: the kernel's local clock, calibrated, only where it is the TSC
and the same on every CPU; otherwise the instance is set to mono. The kernel parts are faked here
(tests/integration/test_trace.py checks both clocks against the wire)."""

from __future__ import annotations

import os

import pytest

from harness import tracefs


@pytest.fixture
def decision(monkeypatch):
    """A process without a decision yet, restored afterwards."""
    monkeypatch.setattr(tracefs, "_local_clock", {})
    return tracefs._local_clock


def fake_calibration(monkeypatch, offsets):
    """_calibrate answers offsets[cpu] for the CPU the calling thread is pinned to."""
    def calibrate(path, pipe):
        (cpu,) = os.sched_getaffinity(0)
        return offsets[cpu]
    monkeypatch.setattr(tracefs, "_calibrate", calibrate)


def clocksource(monkeypatch, tmp_path, name):
    f = tmp_path / "current_clocksource"
    f.write_text(name + "\n")
    monkeypatch.setattr(tracefs, "CLOCKSOURCE", str(f))


def cpus():
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to compare")
    return allowed


def test_local_clock_kept_when_the_cpus_agree(monkeypatch, tmp_path, decision):
    allowed = cpus()
    clocksource(monkeypatch, tmp_path, "tsc")
    fake_calibration(monkeypatch, {c: -0.031163 + i * 2e-6 for i, c in enumerate(allowed)})
    before = os.sched_getaffinity(0)
    assert tracefs._local_clock_usable("unused", -1) == (True, "")
    assert os.sched_getaffinity(0) == before        # the thread's affinity is given back


def test_mono_when_the_cpus_disagree(monkeypatch, tmp_path, decision):
    allowed = cpus()
    clocksource(monkeypatch, tmp_path, "tsc")
    fake_calibration(monkeypatch, {c: -0.031163 + i * 1e-3 for i, c in enumerate(allowed)})
    usable, why = tracefs._local_clock_usable("unused", -1)
    assert not usable and "differs between CPUs by 1000 us" in why
    assert tracefs._local_clock_usable("unused", -1) == (False, why)   # decided once per process


def test_mono_when_the_clocksource_is_not_the_tsc(monkeypatch, tmp_path, decision):
    clocksource(monkeypatch, tmp_path, "hpet")
    fake_calibration(monkeypatch, {c: 0.0 for c in os.sched_getaffinity(0)})
    assert tracefs._local_clock_usable("unused", -1) == (False, "clocksource hpet, not the TSC")


def test_a_calibration_that_fails_later_falls_back_to_mono(monkeypatch, tmp_path, decision):
    """The process decided for the local clock, then one instance's markers do not come back (or the
    marker file cannot be written): that instance is set to mono, saying why, instead of failing."""
    decision.update(usable=True, why="")
    written = {}
    inst_dir = tmp_path / "instances" / "slab-1-0-trace"

    def mkdir(path):
        inst_dir.mkdir(parents=True)
        (inst_dir / "trace_clock").write_text("[local] global mono\n")
        (inst_dir / "trace_pipe").write_text("")
        (inst_dir / tracefs.EVENT).mkdir(parents=True)
    class OsWithFakeMkdir:          # tracefs's own `os`, its mkdir making a fake instance folder
        def __getattr__(self, name):
            return getattr(os, name)
    fake_os = OsWithFakeMkdir()
    fake_os.mkdir = mkdir
    monkeypatch.setattr(tracefs, "TRACEFS", str(tmp_path))
    monkeypatch.setattr(tracefs, "os", fake_os)
    monkeypatch.setattr(tracefs, "_write", lambda path, value: written.__setitem__(os.path.basename(path), value))

    def fail(path, pipe):
        raise OSError(13, "Permission denied")
    monkeypatch.setattr(tracefs, "_calibrate", fail)
    inst = tracefs.Instance("slab-1-0-trace")
    try:
        assert (inst.clock, inst.offset) == ("mono", 0.0)
        assert written["trace_clock"] == "mono" and written["enable"] == "1"
        assert inst.clock_note == "calibration failed: [Errno 13] Permission denied"
    finally:
        inst.close_reader()
