"""The guest watchdog (harness/kernels/vm.py) and the matrix's second boot of a stopped guest, over a
fake `vng`: a shell script in a process group of its own, as vng, virtme-run and QEMU are, that acts
out a guest by the files the real guest script writes (NAME.booted, NAME.log, NAME.exit).

A CI run waited 1200 s for a debian:6.1 guest that had stopped making progress (2026-11-30); these
tests fail when the watchdog lets a stuck guest run on, stops a working one, or leaves its processes."""

import os
import subprocess
import time

import pytest

from harness.kernels import matrix, vm

# The fake guest's behaviour is chosen by the image's name (`vng -r IMAGE`). MARK tags its sleeps so a
# test can see that none outlived the stop.
FAKE_VNG = """#!/bin/sh
while [ $# -gt 0 ]; do
    case "$1" in
        -r) image=$(basename "$2"); shift ;;
        --) shift; script=${1#sh }; break ;;
    esac
    shift
done
base=${script%.guest.sh}
case "$image" in
    hang-at-boot) exec sleep 600.MARK ;;
    hang) date +%s > "$base.booted"; echo started > "$base.log"; exec sleep 601.MARK ;;
    no-poweroff) date +%s > "$base.booted"; echo 7 > "$base.exit"; exec sleep 602.MARK ;;
    slow-but-alive)
        date +%s > "$base.booted"
        for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "case $i" >> "$base.log"; sleep 0.2; done
        echo 0 > "$base.exit" ;;
esac
"""


@pytest.fixture
def fake_vng(monkeypatch, tmp_path):
    mark = str(os.getpid())
    path = tmp_path / "vng"
    path.write_text(FAKE_VNG.replace("MARK", mark))
    path.chmod(0o755)
    monkeypatch.setattr(vm, "_vng", lambda: str(path))
    monkeypatch.setattr(vm, "kvm_usable", lambda: False)
    monkeypatch.setattr(vm, "_probe_cache", lambda: None)
    yield mark
    left = subprocess.run(["pgrep", "-f", f"sleep 60[0-9].{mark}"], capture_output=True, text=True).stdout.split()
    for pid in left:
        os.kill(int(pid), 9)
    assert not left, f"the fake guest's processes outlived the watchdog's stop: {left}"


def _boot(tmp_path, image, **kw):
    rw = tmp_path / "rw"
    return vm.boot(f"/k/{image}", str(rw), "k1", ["true"], cwd="/", tick=0.1, **kw)


def test_a_guest_whose_log_and_records_stand_still_is_stopped(fake_vng, tmp_path):
    t0 = time.monotonic()
    run = _boot(tmp_path, "hang", stall_timeout=1.0)
    assert time.monotonic() - t0 < 15
    assert run.boot is not None and not run.finished and run.exit_code != 0
    assert run.stopped.startswith("no progress for 1 s: the guest's log and case records stood still")
    assert "socklab: the guest was stopped: no progress" in open(run.console).read()


def test_a_guest_that_never_reaches_its_command_is_stopped_and_booted_once_more(fake_vng, tmp_path):
    run = _boot(tmp_path, "hang-at-boot", boot_timeout=0.5)
    assert run.boot is None and run.stopped == "the guest had not reached its command 0.5 s after the start"
    assert run.died_at_boot == [str(tmp_path / "rw" / "k1.console.tcg-died-1.txt")]
    assert "socklab: the guest was stopped" in open(run.died_at_boot[0]).read()


def test_a_command_that_ended_is_not_waited_for_past_the_grace(fake_vng, tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "EXIT_GRACE", 0.5)
    run = _boot(tmp_path, "no-poweroff", stall_timeout=60)
    assert run.finished and run.exit_code == 7
    assert run.stopped == "the command had ended but QEMU had not powered off 0.5 s later"


def test_a_guest_that_keeps_writing_its_log_is_not_stopped(fake_vng, tmp_path):
    """12 log lines 0.2 s apart: 2.4 s in all, each pause well inside a stall timeout of 1 s."""
    run = _boot(tmp_path, "slow-but-alive", stall_timeout=1.0)
    assert run.stopped is None and run.finished and run.exit_code == 0 and run.wall > 2.0


def test_a_progress_mark_that_changes_keeps_a_quiet_log_alive(tmp_path):
    """The matrix's progress() (its case records) counts as much as the log: same decisions, no guest."""
    values = iter(range(1000))
    dog = vm._Watchdog(str(tmp_path / "none.log"), str(tmp_path / "none.exit"), lambda: next(values), 10, 1.0)
    assert all(dog.check(t / 10, boot=0.0) is None for t in range(50))
    still = vm._Watchdog(str(tmp_path / "none.log"), str(tmp_path / "none.exit"), lambda: 3, 10, 1.0)
    decisions = [still.check(t / 10, boot=0.0) for t in range(50)]
    assert decisions[10] is None and decisions[12].startswith("no progress for 1 s")


def test_the_stall_clock_starts_at_the_boot_not_at_the_start(tmp_path):
    dog = vm._Watchdog(str(tmp_path / "none.log"), str(tmp_path / "none.exit"), None, 100, 5.0)
    assert dog.check(1.0, boot=None) is None
    assert dog.check(40.0, boot=None) is None           # booting: only the boot timeout applies
    assert dog.check(41.0, boot=40.0) is None           # first look after the boot: 5 s from there
    assert dog.check(45.5, boot=40.0) is None
    assert dog.check(46.5, boot=40.0).startswith("no progress for 5 s")
    assert vm._Watchdog("x", "y", None, 100, 5.0).check(101.0, boot=None).startswith("the guest had not reached")


class _Kernel:
    image = "/k/vmlinuz"


def _fake_guests(monkeypatch, tmp_path, outcomes):
    """matrix._run_guest over a fake vm.boot: each call writes a partial run folder, log and console,
    then returns a GuestRun stopped mid-run (outcome "stall") or one that finished ("ok")."""
    calls = []

    def boot(image, folder, label, inner, **kw):
        n = len(calls)
        calls.append(kw["progress"]())
        os.makedirs(os.path.join(folder, label, "cases", f"c{n}"), exist_ok=True)
        with open(os.path.join(folder, label, "cases", f"c{n}", "case.json"), "w") as fh:
            fh.write("{}")
        console = os.path.join(folder, f"{label}.console.tcg.txt")
        for path in (console, os.path.join(folder, f"{label}.log")):
            with open(path, "w") as fh:
                fh.write(f"boot {n}\n")
        ok = outcomes[n] == "ok"
        return vm.GuestRun("TCG", 0 if ok else -15, 25.0, 60.0, console, stopped=None if ok else "no progress",
                           finished=ok)
    monkeypatch.setattr(matrix.vm, "boot", boot)
    return calls


def test_a_guest_stopped_mid_run_is_booted_once_more_and_its_partial_run_kept(monkeypatch, tmp_path):
    calls = _fake_guests(monkeypatch, tmp_path, ["stall", "ok"])
    lines = []
    g, stalled = matrix._run_guest(_Kernel(), str(tmp_path), "debian-6.1-x", ["true"], None, False, "P", lines.append)
    assert g.stopped is None and g.finished and len(calls) == 2
    assert calls[1] == (0, 0)          # the second boot counts its own records, not the first one's
    kept = str(tmp_path / "debian-6.1-x.stalled-1")
    assert stalled == [kept] and os.path.exists(os.path.join(kept, "cases", "c0", "case.json"))
    assert open(kept + ".log").read() == "boot 0\n"
    assert open(tmp_path / "debian-6.1-x.console.tcg.stalled-1.txt").read() == "boot 0\n"
    assert os.listdir(tmp_path / "debian-6.1-x" / "cases") == ["c1"]
    assert any("the guest was stopped: no progress" in line for line in lines)
    assert any(f"starting the guest once more; the stopped run is kept in {kept}" in line for line in lines)


def test_a_guest_stopped_twice_is_the_answer(monkeypatch, tmp_path):
    calls = _fake_guests(monkeypatch, tmp_path, ["stall", "stall", "ok"])
    g, stalled = matrix._run_guest(_Kernel(), str(tmp_path), "k", ["true"], None, False, "P", lambda line: None)
    assert len(calls) == 2 and g.stopped == "no progress" and len(stalled) == 1


def test_a_guest_that_finished_is_not_booted_again_even_when_stopped_after(monkeypatch, tmp_path):
    calls = _fake_guests(monkeypatch, tmp_path, ["ok"])
    g, stalled = matrix._run_guest(_Kernel(), str(tmp_path), "k", ["true"], None, False, "P", lambda line: None)
    assert len(calls) == 1 and stalled == []
