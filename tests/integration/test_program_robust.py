"""The socket program survives a malformed command and a timed-out call (root: a real program in a lab)."""

from __future__ import annotations

import select
import time

import pytest

from harness.errors import StepError, StepTimeout
from harness.lab import Lab


def test_a_malformed_command_is_answered_and_the_program_keeps_serving():
    with Lab(trace_states=False) as lab:
        prog = lab.client
        prog.wait_ready()
        prog.control.sendall(b"{not json\n")
        prog.control.sendall(b'{"id": 77, "op": 5}\n')
        deadline = time.monotonic() + 5
        while len(prog.protocol_errors) < 2:      # both answers read (no event to wait on from here)
            assert time.monotonic() < deadline, prog.protocol_errors
            select.select([], [], [], 0.005)
        with pytest.raises(StepError) as exc:
            prog.socket()
        assert "malformed command b'{not json'" in str(exc.value)
        assert "malformed command b'{\"id\": 77, \"op\": 5}'" in str(exc.value)
        s = prog.socket()          # still serving
        assert s.fd > 0


def test_a_timed_out_call_is_named_by_the_next_step():
    with Lab(trace_states=False) as lab:
        srv = lab.server.socket()
        srv.bind(50000)
        srv.listen(1)
        with pytest.raises(StepTimeout, match=r"accept\(fd=\d+\) did not return within 0.3 s"):
            srv.accept(timeout=0.3)
        with pytest.raises(StepTimeout, match=r"not sent: the program is still blocked in accept\(fd=\d+\), which did "
                                              r"not return within 0.3 s \(nor in the 0.2 s since\)"):
            lab.server.socket(timeout=0.2)
        lab.client.socket().connect(lab.hosts.server, 50000)    # the accept returns now
        lab.server.stuck._future.result(5)
        assert lab.server.socket().fd > 0


def test_the_launcher_answers_a_bad_request_and_keeps_launching():
    """A malformed request or a namespace that cannot be entered gets one clear line; the next program starts."""
    import os
    import socket

    from harness.errors import SetupError
    from harness.launcher import Launcher, wait_exit

    launcher = Launcher()
    try:
        launcher.sock.send(b"{not json")
        answer = launcher.sock.recv(4096)
        assert b"launcher: cannot serve b'{not json'" in answer
        ours, theirs = socket.socketpair()
        out = os.open(os.devnull, os.O_WRONLY)
        pid, pidfd = launcher.spawn("/nonexistent/netns", theirs, out)   # setns fails in the child
        assert wait_exit(pidfd, 5.0) and launcher.reap(pid) == 1
        with pytest.raises(SetupError, match=r"launcher: cannot serve .*ChildProcessError"):
            launcher.reap(pid)                                         # reaped already: said, not hung
        ours, theirs = socket.socketpair()
        pid, pidfd = launcher.spawn("/proc/self/ns/net", theirs, out)
        assert b'"type": "ready"' in ours.recv(4096)
        ours.close()                                                   # EOF: the program exits
        assert wait_exit(pidfd, 5.0) and launcher.reap(pid) == 0
        os.close(out)
    finally:
        launcher.close()
    assert launcher.proc.returncode == 0
