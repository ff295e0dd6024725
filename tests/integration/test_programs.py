"""harness.program and harness/agent.py on the real kernel: errnos, pending and stuck calls, closed
sockets, fork/dup, exit/kill, rlimits, commands, and no process left after the lab."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest
import re
import struct

from harness.errors import ExpectationFailed, StepError, StepTimeout
from harness.lab import Lab
from harness.program import Program

PORT = 50000


def listening(lab, backlog=5):
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(backlog)
    return srv


def connected(lab):
    """A listener, a connected client socket and the server's accepted socket."""
    srv = listening(lab)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    return srv, cli, srv.accept()


def fins(lab, src):
    return [s for s in lab.segments(PORT) if s.src == src and s.has("F")]


def netns_inode(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_every_failing_call_reports_its_errno_by_name(lab, family):
    """Each failing call comes back with the kernel's errno as a name, and no return value."""
    srv = lab.server.socket()
    srv.bind(PORT)
    cases = [
        ("bind to a port in use", lambda kw: lab.server.socket().bind(PORT, **kw), "EADDRINUSE"),
        ("bind to the peer's address", lambda kw: lab.server.socket().bind(0, lab.hosts.client, **kw),
         "EADDRNOTAVAIL"),
        ("connect to a port without listener", lambda kw: lab.client.socket().connect(lab.hosts.server, PORT, **kw),
         "ECONNREFUSED"),
        ("recv on an unconnected socket", lambda kw: lab.client.socket().recv(10, **kw), "ENOTCONN"),
        ("shutdown of an unconnected socket", lambda kw: lab.client.socket().shutdown("SHUT_WR", **kw), "ENOTCONN"),
        ("accept on a socket that does not listen", lambda kw: srv.accept(**kw), "EINVAL"),
        ("TCP_MAXSEG below the minimum", lambda kw: lab.client.socket().setsockopt("TCP_MAXSEG", 1, **kw), "EINVAL"),
        ("a descriptor the program does not have", lambda kw: lab.client.sock(999).recv(10, **kw), "EBADF"),
    ]
    for what, step, name in cases:
        call = step({"check": False})
        assert (call.errno, call.ret, call.ok) == (name, None, False), what
        assert step({"expect": name}).errno == name, what
        with pytest.raises(StepError) as exc:
            step({})
        assert name in str(exc.value) and f"expect='{name}'" in str(exc.value), what


def test_an_unmet_expect_and_a_rejected_step_fail_clearly(lab, family):
    """expect= on a call that succeeds fails saying so; a step the program cannot run is rejected."""
    with pytest.raises(ExpectationFailed, match=r"bind\(.*expected to fail with EADDRINUSE, got success"):
        lab.server.socket().bind(PORT, expect="EADDRINUSE")
    with pytest.raises(StepError, match="rejected the step"):
        lab.client.call("no_such_step")
    assert lab.client.socket().getsockopt("TCP_NODELAY") == 0   # the program still serves


def test_pending_accept_completes_after_the_connect(lab, family):
    """accept(wait=False) is blocked until the client connects; wait() returns the connected socket."""
    srv = listening(lab)
    pending = srv.accept(wait=False)
    assert not pending.done()
    cli = lab.client.socket()
    connect = cli.connect(lab.hosts.server, PORT)
    conn = pending.wait(timeout=2)
    accept = conn.call
    _, client_port = cli.getsockname()
    assert conn.peer_port == client_port
    assert accept.background and accept.t1 >= connect.t0
    cli.send("ping")
    assert conn.recv(10).ret == "ping"


def test_wait_blocked_returns_once_the_pending_call_sleeps_in_the_kernel(lab, family):
    """'The server is blocked in accept while the client connects': wait_blocked('inet_csk_accept') returns
    only once accept() has begun and sleeps, also when the program is slow to pick up the step."""
    srv = listening(lab)
    # A program slow to get to the call, made deterministic: stopped for 50 ms, resumed by a timer.
    os.kill(lab.server.pid, signal.SIGSTOP)
    resume = threading.Timer(0.05, os.kill, (lab.server.pid, signal.SIGCONT))
    resume.start()
    try:
        pending = srv.accept(wait=False)
        sent = time.monotonic()
        pending.wait_blocked("inet_csk_accept", timeout=2)
        blocked = time.monotonic()
    finally:
        resume.join()
    lab.client.socket().connect(lab.hosts.server, PORT)
    accept = pending.wait(timeout=2).call
    # wait=False returns once the program has taken the step up; wait_blocked once it sleeps in the kernel.
    assert pending.started <= sent <= blocked and accept.t0 <= blocked


def test_wait_blocked_without_a_name_says_where_the_call_sleeps(lab, family):
    """wait_blocked() with no function waits until the call's thread sleeps in the kernel and names where:
    accept() in inet_csk_accept, recv() in sk_wait_data; not the program's own thread waiting for commands."""
    srv = listening(lab)
    pending = srv.accept(wait=False)
    where = pending.wait_blocked(timeout=2)
    assert where.startswith("inet_csk_accept") and "accept" in where.split("(")[-1], where
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    conn = pending.wait(timeout=2)
    reading = conn.recv(10, wait=False)
    assert reading.wait_blocked(timeout=2).startswith("sk_wait_data")
    assert not reading.done()
    cli.send("hello")
    assert reading.wait(timeout=2).ret == "hello"
    with pytest.raises(StepError, match=r"recv\(\) returned at \+[\d.]+ ms before it blocked in the kernel"):
        cli.send("again")
        done = conn.recv(10, wait=False)
        done.wait(timeout=2)
        done.wait_blocked(timeout=0.5)


def test_any_socket_option_by_name_or_raw(lab, family):
    """setsockopt/getsockopt take any SO_/TCP_/IP_/IPV6_ name of Python's socket module, or (level,
    optname, int | bytes); an unknown name fails in one line naming the closest names."""
    s = lab.client.socket()
    for name, value in (("TCP_KEEPIDLE", 7), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 4), ("TCP_USER_TIMEOUT", 1500),
                        ("TCP_FASTOPEN", 5), ("SO_KEEPALIVE", 1)):
        s.setsockopt(name, value)
        assert s.getsockopt(name) == value, name
    tos = ("IP_TOS", 0x10) if family == "ipv4" else ("IPV6_TCLASS", 0x10)
    s.setsockopt(*tos)
    assert s.getsockopt(tos[0]) == 0x10
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 9)
    assert s.getsockopt("TCP_KEEPIDLE") == 9 == s.getsockopt("IPPROTO_TCP", "TCP_KEEPIDLE")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    assert s.getsockopt("SO_LINGER") == [1, 5]
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, buflen=8) == struct.pack("ii", 1, 5)
    s.setsockopt("SO_LINGER", (1, 0))
    assert s.getsockopt("SO_LINGER") == [1, 0]
    calls = len(lab.calls)
    with pytest.raises(StepError) as exc:
        s.setsockopt("TCP_KEEPIDEL", 5)
    assert str(exc.value) == ("client: setsockopt: unknown socket option 'TCP_KEEPIDEL'; closest: "
                              "TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_NODELAY")
    with pytest.raises(StepError, match="^client: getsockopt: unknown socket option 'SO_REUSADDR'; closest: SO_REUSEADDR"):
        s.getsockopt("SO_REUSADDR")
    assert len(lab.calls) == calls          # nothing was sent to the program
    with pytest.raises(StepError, match=r"setsockopt\(.*\) = -1 ENOPROTOOPT"):
        s.setsockopt(socket.IPPROTO_TCP, 250, 1)


def test_a_call_that_never_returns_raises_step_timeout_naming_it(lab, family):
    """recv on an idle socket with timeout=0.3 raises StepTimeout naming the program and the call."""
    _, cli, conn = connected(lab)
    t = time.monotonic()
    with pytest.raises(StepTimeout) as exc:
        conn.recv(100, timeout=0.3)
    elapsed = time.monotonic() - t
    assert 0.3 <= elapsed < 1.0
    msg = str(exc.value)
    assert msg.startswith(f"server: recv(fd={conn.fd}, size=100") and "within 0.3 s" in msg, msg
    called, given_up = (float(x) for x in re.search(r"called at \+([\d.]+) ms, given up at \+([\d.]+) ms", msg).groups())
    assert (t - lab.start) * 1000 - 1 <= called and given_up - called >= 300, msg
    # The program is still inside that recv; data ends it, and the next step gets its own answer.
    cli.send("late")
    assert conn.send("after").ret == 5
    assert cli.recv(100).ret == "after"


def test_wait_timeouts_give_times_on_the_case_clock(lab, family):
    """A wait that times out says when it gave up (and when it last saw something) in ms since the case
    started, the clock of timeline.txt, not in raw CLOCK_MONOTONIC seconds."""
    srv, cli, conn = connected(lab)
    for wait in (lambda: lab.wait_segment(lambda s: False, timeout=0.1, what="that never comes"),
                 lambda: lab.wait_ss("client", lambda snap: False, timeout=0.1, what="a state never reached"),
                 lambda: lab.wait_counter("server", "ListenOverflows", 10 ** 9, timeout=0.1)):
        before = (time.monotonic() - lab.start) * 1000
        with pytest.raises(StepTimeout) as exc:
            wait()
        after = (time.monotonic() - lab.start) * 1000
        msg = str(exc.value)
        given_up = float(re.search(r"given up at \+([\d.]+) ms", msg).group(1))
        assert before + 100 - 1 <= given_up <= after + 1, msg
        assert not re.search(r"\d{4,}\.\d{4,}", msg), f"a raw monotonic time in: {msg}"
    msg = str(pytest.raises(StepTimeout, lab.wait_segment, lambda s: False, timeout=0.05).value)
    last = float(re.search(r"last segment at \+([\d.]+) ms", msg).group(1))
    assert abs(last - (lab.segments()[-1].time - lab.start) * 1000) < 0.1


def test_a_step_on_a_closed_socket_names_the_closing_step(lab, family):
    """After close(), any step on that socket fails with the close() that ended it; nothing is sent."""
    s = lab.client.socket()
    close = s.close()
    sent = len(lab.calls)
    for step in (lambda: s.recv(10), lambda: s.send("x"), lambda: s.close()):
        with pytest.raises(StepError) as exc:
            step()
        # The time counts from the case's start, as the timeline does.
        assert f"already closed by close() at +{(close.t0 - lab.start) * 1000:.1f} ms" in str(exc.value), str(exc.value)
    assert any(f"{(close.t0 - lab.start) * 1000:9.3f}" in line and "close(" in line
               for line in lab.timeline.text().splitlines())
    assert len(lab.calls) == sent


def test_fork_child_holds_the_connection(lab, family):
    """After fork(), close in the parent sends no FIN; the child still sends, and its close sends the FIN."""
    _, cli, conn = connected(lab)
    child = lab.server.fork()
    assert child.pid != lab.server.pid
    conn.close()
    assert fins(lab, "server") == []
    lab.expect_ss(lab.ss("parent closed"), server=["LISTEN", "ESTAB"])
    held = child.sock(conn.fd)
    held.send("from child")
    assert cli.recv(100).ret == "from child"
    close = held.close()
    fin = lab.wait_segment(lambda s: s.src == "server" and s.has("F"), timeout=2, what="the child's FIN")
    assert fin.time >= close.t0
    assert cli.recv(100).ret == ""
    # The client ACKs the FIN delayed (the kernel enters pingpong mode on a FIN): wait for it.
    lab.wait_segment(lambda s: s.src == "client" and s.ack == 12, timeout=2, what="the ACK of the FIN")
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  P.  1:11(10) ack 1
        client > server  .   1:1(0) ack 11
        server > client  F.  11:11(0) ack 1
        client > server  .   1:1(0) ack 12
    """, port=PORT)


def test_dup_keeps_the_socket_open(lab, family):
    """close() of one of two descriptors sends no FIN; the duplicate works and its close sends it."""
    _, cli, conn = connected(lab)
    dup = conn.dup()
    assert dup.fd != conn.fd
    conn.close()
    assert fins(lab, "server") == []
    dup.send("dup")
    assert cli.recv(10).ret == "dup"
    with pytest.raises(StepError, match="already closed"):
        conn.send("x")
    close = dup.close()
    fin = lab.wait_segment(lambda s: s.src == "server" and s.has("F"), timeout=2, what="the FIN after the last close")
    assert fin.time >= close.t0


def test_exit_without_close_lets_the_kernel_close(lab, family):
    """exit(3): the process ends with status 3, the kernel sends the FIN, later steps say it is gone."""
    _, cli, conn = connected(lab)
    call = lab.client.exit(3)
    assert call.ret == 3 and lab.client.returncode == 3
    fin = lab.wait_segment(lambda s: s.src == "client" and s.has("F"), timeout=2, what="the FIN of the exit")
    assert fin.time >= call.t0
    assert conn.recv(10).ret == ""
    with pytest.raises(StepError, match=r"program that is gone \(exited with status 3"):
        cli.send("x")


def test_kill_ends_the_process_and_its_pending_call(lab, family):
    """kill(): the process dies of SIGKILL, its pending recv fails naming that, the kernel sends the FIN."""
    _, cli, conn = connected(lab)
    pending = cli.recv(10, wait=False)
    kill = lab.client.kill()
    assert kill.op == "kill" and lab.client.returncode == -signal.SIGKILL
    with pytest.raises(StepError, match=r"recv\(.*never returned: killed by SIGKILL"):
        pending.wait(timeout=2)
    fin = lab.wait_segment(lambda s: s.src == "client" and s.has("F"), timeout=2, what="the FIN of the kill")
    assert fin.time >= kill.t0
    assert conn.recv(10).ret == ""
    with pytest.raises(StepError, match="killed by SIGKILL"):
        lab.client.socket()


def test_setrlimit_nofile_limits_descriptors(lab, family):
    """setrlimit('NOFILE', 8): socket() fails with EMFILE once descriptors 0..7 are used; raising it helps."""
    lab.server.setrlimit("NOFILE", 8)
    fds = []
    for _ in range(10):
        call = lab.server.call("socket", {"family": family, "type": "stream"}, check=False)
        if call.errno:
            break
        fds.append(call.ret)
    assert call.errno == "EMFILE"
    assert fds and max(fds) < 8
    lab.server.setrlimit("NOFILE", 64)
    assert lab.server.socket().fd >= 8


ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
c, _ = s.accept()
c.sendall(c.recv(100).upper())
c.close()
s.accept()          # blocks until the lab stops it
"""


def test_command_runs_inside_the_namespace_and_is_stopped(resources, family):
    """lab.command(): any program runs in the server's namespace, serves the client, ends with the lab."""
    with Lab(family=family, trace_states=False) as lab:
        cmd = lab.command("server", [sys.executable, "-c", ECHO_SERVER, lab.addr("server"), PORT], name="echo")
        assert netns_inode(f"/proc/{cmd.pid}/ns/net") == netns_inode(lab.hosts.server.netns_path)
        lab.wait_ss("server", lambda snap: any(r.state == "LISTEN" and r.local_port == PORT for r in snap.rows),
                    timeout=5, what="the echo server's listener")
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, PORT)
        cli.send("ping")
        assert cli.recv(100).ret == "PING"
        assert cmd.proc.poll() is None
    assert cmd.proc.returncode == -signal.SIGTERM
    assert not resources.alive(cmd.pid)


def test_no_program_is_left_after_the_lab(resources, family):
    """Agents, a forked child and an extra program run in their hosts' namespaces and are gone after close."""
    with Lab(family=family, trace_states=False) as lab:
        child = lab.server.fork()           # the first call also waits until the agent entered its namespace
        lab.client.socket()
        extra = lab.program("client", "second")
        extra.socket()
        where = {lab.client.pid: "client", extra.pid: "client", lab.server.pid: "server", child.pid: "server"}
        for pid, role in where.items():
            assert resources.alive(pid)
            assert netns_inode(f"/proc/{pid}/ns/net") == netns_inode(lab.topology.hosts[role].netns_path)
    assert resources.wait_gone(list(where), timeout=2) == []


def test_a_control_socket_closed_under_the_reader_ends_the_program_cleanly(hosts, monkeypatch):
    """Program.close() can close the control socket before the reader's first recv (a program never used):
    the reader must end marking the program gone, not die with an exception of its own."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    ours, theirs = socket.socketpair()
    theirs.close()
    ours.close()
    prog = Program(hosts.client, "closed-early", _control=ours, _pid=0)
    prog._reader.join(timeout=2)
    assert not prog._reader.is_alive()
    assert [f"{e.exc_type.__name__}: {e.exc_value}" for e in errors] == []
    assert prog.exited


def test_read_returns_what_is_queued_and_never_blocks(lab, family):
    """lab.read(): EAGAIN after its deadline when nothing comes, the data once it waits in the queue,
    ECONNRESET at once when the connection was reset; each readiness seen in ss."""
    _, conn, cli = lab.establish(PORT)
    t0 = time.monotonic()
    nothing = lab.read(conn, 100, timeout=0.3)
    assert nothing.errno == "EAGAIN" and time.monotonic() - t0 < 3
    cli.send("hello world")
    assert lab.read(conn, 100, at_least=11).ret == "hello world"
    assert lab.read(cli, 100, timeout=0.2).errno == "EAGAIN"       # a client socket: its port from getsockname
    cli.setsockopt("SO_LINGER", (1, 0))
    cli.close()
    t1 = time.monotonic()
    assert lab.read(conn, 100).errno == "ECONNRESET" and time.monotonic() - t1 < 3


def test_close_all_ends_every_program_and_its_children(lab, family):
    """program.close_all (the lab's teardown): each program and a forked child see EOF and exit 0,
    and each is reaped (its status collected)."""
    from harness.program import close_all
    extra = lab.program("server", "second")
    child = lab.client.fork()
    for prog in (lab.client, extra, child):
        prog.socket()                    # each answers: started and serving
    close_all([lab.client, extra])
    assert (lab.client.returncode, extra.returncode) == (0, 0)
    assert child.exited, "the forked child was not reaped with its parent"
