"""socklab soak: load processes started and stopped by soak itself; failures named per run (no privileges)."""

from __future__ import annotations

from harness import cli, names


def test_load_processes_run_and_are_gone_afterwards():
    procs = cli._start_load(2)
    try:
        assert len(procs) == 2 and all(names.pid_alive(p.pid) for p in procs)
    finally:
        cli._stop_load(procs)
    assert not any(names.pid_alive(p.pid) for p in procs)


def test_soak_names_the_failing_case_of_each_run(tmp_path, capsys):
    case = tmp_path / "test_flaky.py"
    case.write_text("def test_ok():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2, 'the broken one'\n")
    code = cli.main(["soak", "--runs", "2", "-n", "0", "--load", "1", "--cases", str(case),
                     "--reports", str(tmp_path / "reports")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.count("run  1: exit 1") == 1 and "run  2: exit 1" in out, out
    assert "test_flaky.py::test_broken" in out and "the broken one" in out, out
    assert "socklab soak: 0 of 2 runs passed (-n 0, load 1); wall median" in out, out
    assert "failed in 2 of 2 runs:" in out and "test_broken" in out.split("failed in 2 of 2 runs:")[1], out


BLOCKING = """
import os, select, time


def test_blocks():
    open(os.environ["SOAK_READY"], "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:      # until the soak is stopped (no event to wait on)
        select.select([], [], [], 0.1)
"""


def test_sigterm_stops_the_run_in_progress_and_the_load(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    (tmp_path / "test_blocking.py").write_text(BLOCKING)
    ready = tmp_path / "ready"
    soak = subprocess.Popen([sys.executable, "-m", "harness.cli", "soak", "--runs", "2", "-n", "0", "--load", "1",
                             "--cases", str(tmp_path / "test_blocking.py"), "--reports", str(tmp_path / "reports")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "SOAK_READY": str(ready)})
    try:
        header = soak.stdout.readline()
        load = [int(p) for p in header.split("(pids ")[1].rstrip(")\n").split()]
        import select
        import time
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and soak.poll() is None, header
            select.select([], [], [], 0.05)
        children = [int(l.split()[0]) for l in subprocess.run(["ps", "-o", "pid=", "--ppid", str(soak.pid)],
                                                             capture_output=True, text=True).stdout.split()]
        soak.send_signal(signal.SIGTERM)
        out = soak.communicate(timeout=60)[0]
        assert soak.returncode == 130, out
        assert "interrupted after 0 runs" in out, out
        assert not any(names.pid_alive(p) for p in load + children), (load, children)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait()
