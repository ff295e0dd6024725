"""harness.trace and harness.tracefs on the real kernel: order, the client's port-0 event, times
against the wire, isolation between labs, and instances removed behind."""

from __future__ import annotations

import os
import select
import time

import pytest

from harness import tracefs
from harness.lab import Lab

PORT = 50000


def wait_history(lab, role, last, *, port=PORT, listener=False, timeout=2.0):
    """Poll the trace until `role`'s socket history ends in state `last` (there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        hists = [h for h in lab.transitions(port) if h.key[0] == lab.addr(role)
                 and (h.states()[1:2] == ["LISTEN"]) == listener]
        if len(hists) == 1 and hists[0].states()[-1] == last:
            return hists[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{role}: no history ending in {last} within {timeout} s: {[str(h) for h in hists]}")
        select.select([], [], [], 0.01)


def connect_and_close(lab):
    """Client connects and closes first, server reads EOF and closes, then the listener closes."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    connect = cli.connect(lab.hosts.server, PORT)
    conn = srv.accept()
    cli.close()
    assert conn.recv(10).ret == ""
    conn.close()
    srv.close()
    return cli, connect


def test_connect_and_close_transitions_come_in_order(lab, family):
    """Active closer, passive closer and listener: the kernel's states in order, times non-decreasing."""
    connect_and_close(lab)
    wait_history(lab, "server", "CLOSE")
    client = lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                                    port=PORT)
    server = lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                                    port=PORT)
    listener = lab.expect_transitions("server", "CLOSE -> LISTEN -> CLOSE", port=PORT, listener=True)
    for hist in (client, server, listener):
        times = [t.time for t in hist.transitions]
        assert times == sorted(times), str(hist)
    # Across sockets too: the client's FIN_WAIT1 precedes the server's CLOSE_WAIT, which precedes its LAST_ACK.
    at = {(h is client, t.new): t.time for h in (client, server) for t in h.transitions}
    assert at[True, "FIN_WAIT1"] <= at[False, "CLOSE_WAIT"] <= at[False, "LAST_ACK"] <= at[False, "CLOSE"]


def test_the_clients_port_zero_event_is_attached_to_its_history(lab, family):
    """The first event (CLOSE -> SYN_SENT, local port 0) heads the history of the port connect() bound."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    socks = []
    for _ in range(2):
        cli = lab.client.socket()
        connect = cli.connect(lab.hosts.server, PORT)
        socks.append((cli.getsockname()[1], connect))
    hists = lab.transitions(PORT)
    assert not [h for h in hists if h.key[1] == 0], [str(h) for h in hists]
    raw_port0 = [l for l in lab.trace_lines
                 if f"={lab.addr('client')} " in l and " sport=0 " in l and "newstate=TCP_SYN_SENT" in l]
    assert len(raw_port0) == 2      # the kernel did report them with port 0
    for port, connect in socks:
        hist = lab.history("client", port)
        first = hist.transitions[0]
        assert (first.local_port, first.old, first.new) == (0, "CLOSE", "SYN_SENT")
        assert hist.key[1] == port and hist.states() == ["CLOSE", "SYN_SENT", "ESTABLISHED"]
        assert connect.t0 <= first.time <= connect.t1


def test_port_zero_event_goes_to_its_own_socket_when_handshakes_finish_out_of_order(lab, family):
    """First client's SYN is dropped, a second connects meanwhile: each port-0 event still heads its own socket."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    rule = lab.faults.drop("client > server", "S", count=1)
    first, second = lab.client.socket(), lab.client.socket()
    first_connect = first.connect(lab.hosts.server, PORT, nonblocking=True, expect="EINPROGRESS")
    second_connect = second.connect(lab.hosts.server, PORT)
    first.wait_connected(timeout=3)          # after the 1 s SYN retransmission
    rule.release()
    for sock, connect in ((first, first_connect), (second, second_connect)):
        port = sock.getsockname()[1]
        head = lab.history("client", port).transitions[0]
        assert head.local_port == 0 and connect.t0 <= head.time <= connect.t1, (
            f"port {port}: its CLOSE -> SYN_SENT at {head.time:.6f} is not inside its connect() "
            f"[{connect.t0:.6f}, {connect.t1:.6f}]")


def assert_times_line_up(lab):
    """SYN_SENT before the SYN, ESTABLISHED after the SYN+ACK; the server's socket is born at the ACK.
    The client's ESTABLISHED falls 4-11 us after the SYN+ACK is captured and before its ACK: a clock
    offset wrong by more than that fails here."""
    connect_and_close(lab)
    wait_history(lab, "server", "CLOSE")
    segs = lab.segments(PORT)
    syn, synack, ack = segs[:3]
    client_fin = next(s for s in segs if s.src == "client" and s.has("F"))
    server_fin = next(s for s in segs if s.src == "server" and s.has("F"))
    cli = {t.new: t.time for t in lab.history("client", PORT).transitions}
    srv = {t.new: t.time for t in lab.history("server", PORT).transitions}
    assert cli["SYN_SENT"] <= syn.time
    assert synack.time <= cli["ESTABLISHED"] <= ack.time
    # The request (NEW_SYN_RECV) is not a full socket: LISTEN -> SYN_RECV -> ESTABLISHED are both
    # traced when the handshake's last ACK creates the server's socket, not when the SYN arrives.
    assert ack.time <= srv["SYN_RECV"] <= srv["ESTABLISHED"]
    assert cli["FIN_WAIT1"] <= client_fin.time <= srv["CLOSE_WAIT"]
    assert srv["LAST_ACK"] <= server_fin.time


def test_transition_times_line_up_with_the_segments(lab, family):
    """With the process's clock (here: the local clock, calibrated)."""
    assert_times_line_up(lab)


@pytest.fixture
def mono_instances(monkeypatch):
    """Instances made while this fixture holds are set to trace_clock=mono (the fallback)."""
    tracefs.close_pool()        # its spare was made under the process's decision
    monkeypatch.setattr(tracefs, "_local_clock", {"usable": False, "why": "forced by the test"})
    yield
    tracefs.close_pool()


def test_transition_times_line_up_with_the_mono_clock(mono_instances, family):
    """The fallback where the local clock is not the TSC or differs between CPUs."""
    with Lab(family=family) as lab:
        with open(os.path.join(lab.trace.path, "trace_clock")) as fh:
            assert "[mono]" in fh.read()
        assert (lab.trace.clock, lab.trace.offset, lab.trace.clock_note) == ("mono", 0.0, "forced by the test")
        assert_times_line_up(lab)


def test_another_labs_events_stay_out_of_this_labs_histories(lab, family):
    """Two labs at once on the same port: each one's histories hold only its own addresses, though both
    instances see both labs' events."""
    with Lab(family=family) as other:
        connect_and_close(other)
        connect_and_close(lab)
        wait_history(lab, "server", "CLOSE")
        wait_history(other, "server", "CLOSE")
        for mine, theirs in ((lab, other), (other, lab)):
            own = mine.addresses()
            hists = mine.transitions()
            assert len(hists) == 3, [str(h) for h in hists]
            for h in hists:
                assert h.key[0] in own and h.key[2] in own | {"0.0.0.0", "::"}, str(h)
            # The instance is system-wide: the other lab's events did reach it and were filtered out.
            assert any(f"={theirs.addr('client')} " in line for line in mine.trace_lines)


def test_instances_are_removed_when_the_pool_closes(resources):
    """close_pool() removes every instance this process made (the spare included); none stays with our pid."""
    pid = os.getpid()
    with Lab() as lab:
        used = lab.trace.name
        assert used.startswith(f"slab-{pid}-") and used in resources.instances(pid)
    tracefs.close_pool()
    assert resources.instances(pid) == []


def test_no_spare_instance_when_no_case_follows(resources):
    """more_cases(False) (the plugin's last test of a process): get() prepares no spare, so a one-case
    run neither makes nor waits at exit to remove an instance nobody uses; a lab made after all
    still gets one, made on demand."""
    pid = os.getpid()
    tracefs.close_pool()
    tracefs.more_cases(False)
    try:
        pool = tracefs.pool()
        first = pool.get()
        assert pool._next is None
        assert resources.instances(pid) == [first.name]
        second = pool.get()
        assert second.name != first.name and sorted(resources.instances(pid)) == sorted([first.name, second.name])
        pool.release(first)
        pool.release(second)
    finally:
        tracefs.more_cases(True)
        tracefs.close_pool()
    assert resources.instances(pid) == []


def test_a_cases_instance_goes_back_once_finish_has_read_it(lab):
    """finish() reads the trace for the last time and gives the instance back at once, so its removal
    (RCU grace periods) starts before the judging and the programs' exits; the record keeps what was
    read, and a later read reads nothing more."""
    connect_and_close(lab)
    path = lab.trace.path
    lab.finish()
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        select.select([], [], [], 0.005)
    assert not os.path.exists(path)                  # removed while the lab is still open
    assert sorted(h.states() for h in lab.transitions(PORT)) == sorted(
        h.states for h in lab.record().transitions if PORT in (h.local_port, h.peer_port))
    assert ["CLOSE", "LISTEN", "CLOSE"] in [h.states() for h in lab.transitions(PORT)]
