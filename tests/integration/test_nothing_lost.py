"""Nothing observed is lost: lost trace events, an interrupted run, drop counters (root)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import time

import pytest

from .conftest import RUN, case_run_argv, child_env

LOST_CASE = '''
def test_lost(lab):
    s = lab.server.socket(); s.bind(50000); s.listen(1)
    lab.client.socket().connect(lab.hosts.server, 50000)
    lab.trace_lines.append("CPU:1 [LOST 42 EVENTS]")     # what the kernel prints when the buffer overflowed


def test_overflow(lab):
    """A listener with backlog 0 takes one connection; the others' final ACKs are dropped (counted)."""
    s = lab.server.socket(); s.bind(50000); s.listen(0)
    for _ in range(3):
        lab.client.socket().connect(lab.hosts.server, 50000, nonblocking=True, expect="EINPROGRESS")
    lab.wait_counter("server", "ListenOverflows", 1)
'''


def test_lost_trace_events_are_recorded_and_the_artifacts_written(run_pytest):
    run = run_pytest(LOST_CASE, "-k", "lost", subprocess=True)
    assert run.returncode == 0, run.output
    folder = run.case_dir("test_case.py::test_lost")
    for name in ("packets.pcap", "segments.txt", "ss.txt", "transitions.txt", "timeline.txt", "case.json"):
        assert os.path.exists(os.path.join(folder, name)), name
    rec = run.json("test_case.py::test_lost", "case.json")
    assert rec["trace_lost"] == {"count": 42, "lines": ["CPU:1 [LOST 42 EVENTS]"]}
    assert any("the trace lost 42 events" in n["text"] for n in rec["notes"])
    assert rec["transitions"], "what was read before the loss is kept"
    with open(os.path.join(run.run_dir, "results.json")) as fh:
        assert json.load(fh)["cases"][0]["trace_lost"]["count"] == 42
    with open(os.path.join(folder, "index.html")) as fh:      # the case's own page
        assert "the trace lost 42 events" in fh.read()


def test_each_case_records_drop_counters(run_pytest):
    run = run_pytest(LOST_CASE, "-k", "overflow", subprocess=True)
    assert run.returncode == 0, run.output
    drops = run.json("test_case.py::test_overflow", "case.json")["drops"]
    assert set(drops) == {"client", "server"}
    assert drops["server"]["counters"]["TcpExt.ListenOverflows"] >= 1
    assert drops["server"]["counters"]["TcpExt.ListenDrops"] >= 1
    links = drops["client"]["links"]
    assert "lo" in links and len(links) == 2
    veth = next(v for k, v in links.items() if k != "lo")
    assert veth["tx_packets"] >= 3 and veth["rx_dropped"] == veth["tx_dropped"] == 0


BLOCKING = '''
import os


def test_first(lab):
    pass


def test_blocks(lab):
    srv = lab.server.socket(); srv.bind(50000); srv.listen(1)
    pending = srv.accept(wait=False)
    open(os.path.join(os.path.dirname(__file__), "case-ready"), "w").close()   # xdist: no output forwarded
    pending.wait(timeout=60)


def test_never_reached(lab):
    pass
'''


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["no-xdist", "xdist"])
def test_an_interrupted_run_says_so_and_keeps_the_case_in_flight(pytester, spawn, workers):
    pytester.makepyfile(test_case=BLOCKING)
    run_dir = os.path.join(str(pytester.path), "reports", RUN)
    run = spawn(case_run_argv(str(pytester.path), "-s", "-p", "no:randomly", *workers), cwd=pytester.path,
                env=child_env())
    ready = os.path.join(str(pytester.path), "case-ready")
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        assert time.monotonic() < deadline and run.proc.poll() is None, f"the case never blocked: {run.output}"
        select.select([], [], [], 0.02)     # a file's creation has no event we can wait on from here
    run.proc.send_signal(signal.SIGTERM)
    status = run.finish(timeout=30)
    assert status == pytest.ExitCode.INTERRUPTED, run.output
    with open(os.path.join(run_dir, "results.json")) as fh:
        results = json.load(fh)
    assert results["interrupted"] is True
    got = {c["id"]: c["outcome"] for c in results["cases"]}
    assert got == {"test_case.py::test_first": "passed", "test_case.py::test_blocks": "interrupted"}, got
    with open(os.path.join(run_dir, "index.html")) as fh:
        assert "INTERRUPTED" in fh.read()
    if not workers:
        assert re.search(r"socklab: 2 cases \(1 interrupted, 1 passed\); verdicts: .*; INTERRUPTED: the run stopped "
                         r"before its end", run.output), run.output
