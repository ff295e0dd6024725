"""Half-close: a side that closed one direction (close() without the peer's, shutdown()) and what
still flows, what ss shows meanwhile, and what happens to data around the FIN."""

import pytest

from harness.segment import match

PORT = 50000
FIN_TIMEOUT = 1         # the client's shortened per-namespace tcp_fin_timeout, seconds
SLOW_RTO_US = 5_000_000   # a tcp_rto_min_us that keeps RTO-paced timers (window probes) out of a case


def listening(lab):
    """The server's listener on PORT."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(16)
    return srv


def connect(lab, srv):
    """A client connects while the server is blocked in accept(): (client's socket, server's socket)."""
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    return cli, accepting.wait()


def timer_length(row, snap, since):
    """(low, high): the length the kernel gave `row`'s timer, started at `since`, from one ss reading of it.

    ss prints whole seconds (60 s and more as "1min"), so what was left lies in [remaining, remaining + 1),
    read at some moment between the snapshot's start and end.
    """
    return row.timer.remaining + snap.before - since, row.timer.remaining + 1 + snap.after - since


def from_client(lab, since):
    """The client's segments from time `since` on."""
    return [s for s in lab.segments(PORT) if s.src == "client" and s.time >= since]


@pytest.mark.article("004")
@pytest.mark.experiment("HALFCLOSE-NOCLOSE")
@pytest.mark.claim("when the client closes and the server never does, the client sits in FIN_WAIT_2 and the server "
                   "in CLOSE_WAIT; the client's entry goes away after tcp_fin_timeout, the server's stays")
def test_fin_wait_2_times_out_close_wait_stays(lab, family):
    """Two clients close, the server never: FIN-WAIT-2 / CLOSE-WAIT, tcp_fin_timeout 60 s then 1 s, a late send()."""
    srv = listening(lab)
    old_cli, old_conn = connect(lab, srv)
    cli, conn = connect(lab, srv)
    old_port, port = old_cli.getsockname()[1], cli.getsockname()[1]
    default = int(lab.hosts.client.get_sysctl("net.ipv4.tcp_fin_timeout"))

    old_cli.close()                                     # under the default tcp_fin_timeout
    old_acked = lab.wait_segment(match("server", ".", ack=2, port=old_port), what="the server's ACK of the first FIN")
    old_snap = lab.wait_ss("client", lambda s: s.find(local_port=old_port, state="FIN-WAIT-2"),
                           what="the first client's FIN-WAIT-2")
    old = old_snap.find(local_port=old_port)[0]
    assert old.timer is not None and old.timer.name == "timewait", old.raw
    low, high = timer_length(old, old_snap, old_acked.time)
    assert low - 0.05 <= default <= high + 0.05, \
        f"tcp_fin_timeout {default}, timer of {low:.2f} to {high:.2f} s:\n{old.raw}"

    lab.set_sysctl("client", "net.ipv4.tcp_fin_timeout", FIN_TIMEOUT)
    cli.close()
    acked = lab.wait_segment(match("server", ".", ack=2, port=port), what="the server's ACK of the second FIN")
    lab.wait_ss("client", lambda s: s.find(local_port=port, state="FIN-WAIT-2"), what="the second client's FIN-WAIT-2")
    snap = lab.ss("both clients closed, the server did not")
    lab.expect_ss(snap, client=["FIN-WAIT-2", "FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT", "CLOSE-WAIT"])
    short = snap["client"].find(local_port=port)[0]
    assert short.timer is not None and short.timer.name == "timewait", short.raw
    assert short.timer.remaining <= FIN_TIMEOUT, short.raw
    waiting = snap["server"].find(peer_port=port)[0]
    assert waiting.recv_q == 1, f"Recv-Q of CLOSE-WAIT counts the FIN's sequence number:\n{waiting.raw}"

    gone_low, gone_high = lab.wait_gone("client", lambda s: s.find(local_port=port), acked.time,
                                    timeout=FIN_TIMEOUT + 4, what="the second client's FIN-WAIT-2 entry gone")
    after = lab.ss("after the shortened tcp_fin_timeout")
    lab.expect_ss(after, client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT", "CLOSE-WAIT"])
    # Kernel timers fire late, never early.
    assert FIN_TIMEOUT - 0.05 <= gone_high and gone_low <= FIN_TIMEOUT + 0.5, \
        f"FIN-WAIT-2 ended {gone_low:.3f} to {gone_high:.3f} s after entry"

    eof = conn.recv(100)                                # reading the EOF consumes the FIN's sequence number
    read = lab.ss("the server read EOF")["server"].find(peer_port=port)[0]
    late = conn.send("late")                            # the server finally writes to a peer that has gone
    lab.wait_segment(match("client", "R", port=port), what="the client's RST")
    later = conn.send("more", check=False)
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  P.  1:5(4) ack 2
        client > server  R   2:2(0)
    """, port=port)
    assert (eof.ret, read.recv_q, late.ret, later.errno) == ("", 0, 4, "EPIPE"), \
        (eof.text(), read.raw, late.text(), later.text())
    lab.expect_ss(lab.ss("after the RST"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=port)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> CLOSE", port=port)

    still_waiting = len(after["server"].find(state="CLOSE-WAIT")) == 2
    lab.verdict(gone_low <= FIN_TIMEOUT + 0.5 and still_waiting,
                f"client FIN-WAIT-2 with {old.timer_text()} under the default tcp_fin_timeout {default}; with it "
                f"set to {FIN_TIMEOUT} s the entry went away {gone_low:.2f} to {gone_high:.2f} s after the ACK of "
                f"the FIN "
                f"while the server stayed CLOSE-WAIT (Recv-Q {waiting.recv_q}: the FIN, {read.recv_q} once recv() "
                f"returned EOF); the server's late send() returned {late.ret}, the client's kernel answered RST and "
                f"the next send() failed with {later.errno}")


@pytest.mark.article("000")
@pytest.mark.experiment("HALFCLOSE-DATA")
@pytest.mark.claim("after receiving a FIN a side can still send data, and a socket in FIN_WAIT_2 still receives it")
def test_half_closed_client_still_receives(lab, family):
    """The client shuts down writing; the server keeps sending, the client reads it in FIN-WAIT-2; the server closes."""
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown("SHUT_WR")
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN")
    eof = conn.recv(100)
    half = lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="the client's FIN-WAIT-2")
    lab.expect_ss(lab.ss("half closed"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    sent = conn.send("more data")                       # the server, in CLOSE-WAIT, keeps sending
    got = cli.recv(100)
    lab.wait_segment(match("client", ".", ack=10), what="the client's ACK of the data")
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=11), what="the client's ACK of the server's FIN")
    end = cli.recv(100)
    lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone")
    lab.expect_ss(lab.ss("after the server's close"), client=["TIME-WAIT"], server=["LISTEN"])

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  P.  1:10(9) ack 2
        client > server  .   2:2(0) ack 10
        server > client  F.  10:10(0) ack 2
        client > server  .   2:2(0) ack 11
    """, port=PORT)
    assert (eof.ret, got.ret, end.ret) == ("", "more data", ""), (eof.text(), got.text(), end.text())
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE", port=PORT)
    state = half.rows[0].state
    lab.verdict(sent.ret == 9 and got.ret == "more data" and state == "FIN-WAIT-2",
                f"after its FIN was ACKed the client ({state}) received {len(got.ret)} bytes the server sent from "
                f"CLOSE-WAIT after reading EOF ({eof.ret!r}); the server's FIN then took the client to TIME-WAIT")


@pytest.mark.article("004")
@pytest.mark.experiment("SHUT-RD")
@pytest.mark.claim("shutdown(SHUT_RD) sends nothing, and data the peer sends afterwards is discarded")
def test_shutdown_read(lab, family):
    """The client shuts down reading: what goes on the wire, what becomes of later data, what recv() returns."""
    srv, conn, cli = lab.establish(PORT)
    shut = cli.shutdown("SHUT_RD")
    before = cli.recv(100)                              # nothing has arrived yet
    conn.send("after")
    lab.wait_segment(lambda s: s.src == "client" and s.time > shut.t0, what="the client's first segment after shutdown")
    snap = lab.wait_ss("client", lambda s: s.rows and s.rows[0].recv_q == 5, what="the data in the client's Recv-Q")
    lab.expect_ss(lab.ss("after the server's send"), client=["ESTAB"], server=["LISTEN", "ESTAB"])
    data = cli.recv(100)
    after = cli.recv(100)

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  P.  1:6(5) ack 1
        client > server  .   1:1(0) ack 6
    """, port=PORT)
    assert (before.ret, data.ret, after.ret) == ("", "after", ""), (before.text(), data.text(), after.text())
    data_seg = [s for s in lab.segments(PORT) if s.src == "server" and s.length][0]
    sent_at_shutdown = [s for s in from_client(lab, shut.t0) if s.time < data_seg.time]
    answer = [s for s in from_client(lab, data_seg.time)][0]
    discarded = data.ret != "after"
    lab.verdict(not sent_at_shutdown and discarded,
                f"shutdown(SHUT_RD) sent {len(sent_at_shutdown)} segments; recv() then returned {before.ret!r} at "
                f"once; "
                f"the server's 5 bytes were ACKed ({answer.flags} ack {answer.ack}), held in Recv-Q "
                f"({snap.rows[0].recv_q}) and returned by the next recv() ({data.ret!r}), after which recv() "
                f"returned {after.ret!r}")


@pytest.mark.article("004")
@pytest.mark.experiment("SHUT-WR")
@pytest.mark.claim("shutdown(SHUT_WR) or shutdown(SHUT_RDWR) sends a FIN, and when the server then closes the "
                   "client ends in TIME_WAIT")
@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
def test_shutdown_write_then_server_close(lab, family, how):
    """The client shuts down (SHUT_WR or SHUT_RDWR) without close(); the server reads EOF and closes."""
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown(how)
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN")
    half = lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="the client's FIN-WAIT-2")
    lab.expect_ss(lab.ss("half closed"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    eof = conn.recv(100)
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=2), what="the client's ACK of the server's FIN")
    lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone")
    snap = lab.ss("after the server's close, the client's descriptor still open")
    lab.expect_ss(snap, client=["TIME-WAIT"], server=["LISTEN"])
    end = cli.recv(100)
    cli.close()

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  F.  1:1(0) ack 2
        client > server  .   2:2(0) ack 2
    """, port=PORT)
    assert (eof.ret, end.ret) == ("", ""), (eof.text(), end.text())
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE", port=PORT)
    fins = [s for s in lab.segments(PORT) if s.src == "client" and "F" in s.flags]
    tw = snap["client"].find(state="TIME-WAIT")
    lab.verdict(len(fins) == 1 and bool(tw),
                f"shutdown({how}) sent FIN (seq {fins[0].seq}); the client waited in {half.rows[0].state} "
                f"{'without a timer' if half.rows[0].timer is None else 'with ' + half.rows[0].timer_text()}, and "
                f"after the server's close showed {tw[0].state if tw else 'no entry'} while its descriptor was still "
                f"open")


@pytest.mark.article("004")
@pytest.mark.experiment("SHUT-WR-QUEUED")
@pytest.mark.claim("shutdown(SHUT_WR) discards data that was written but is still unsent in the send buffer")
def test_shutdown_write_with_unsent_data(lab, family):
    """The server's window is closed with data still queued at the client; shutdown(SHUT_WR): is the data delivered?"""
    size = 10000
    # While the window is closed, nothing may depend on how long the case takes to look: the client's
    # window probes are paced by its RTO, and the server ACKs the first segment after the window
    # reopens at once only if the pause exceeded its own RTO. With a long tcp_rto_min on both hosts
    # no probe leaves before the server reads, and that first segment is ACKed like every later one.
    for role in ("client", "server"):
        lab.set_sysctl(role, "net.ipv4.tcp_rto_min_us", SLOW_RTO_US)
    srv = lab.server.socket()
    srv.setsockopt("SO_RCVBUF", 1)                      # the kernel's minimum, inherited by the accepted socket
    srv.bind(PORT)
    srv.listen(16)
    cli, conn = connect(lab, srv)
    rcvbuf = conn.getsockopt("SO_RCVBUF")
    cli.setsockopt("SO_SNDBUF", 1 << 20)                # room for all of it: send() returns at once
    sent = cli.send(size=size)
    zero = lab.wait_segment(lambda s: s.src == "server" and s.win == 0, what="a zero window from the server")
    queued = lab.wait_ss("client", lambda s: s.rows and s.rows[0].timer and s.rows[0].timer.name == "persist",
                         what="the client probing the closed window").rows[0]
    unsent = queued.info.get("notsent", 0)
    cli.shutdown("SHUT_WR")
    closing = lab.ss("after shutdown(SHUT_WR) with unsent data")["client"].rows[0]
    chunks = []
    while True:                                         # now the server reads everything out
        # MSG_WAITALL: the kernel copies segment after segment and sends each window update at once;
        # a round trip to the case per segment could outlast the server's 40 ms delayed ACK.
        data = conn.recv(size, flags=("MSG_WAITALL",)).ret
        if not data:
            break
        chunks.append(data)
    received = "".join(chunks)
    fin = lab.wait_segment(lambda s: s.src == "client" and "F" in s.flags, what="the client's FIN")
    lab.wait_segment(match("server", ".", ack=size + 2), what="the server's ACK of the FIN")

    assert sent.ret == size and zero.win == 0
    assert unsent > 0, f"nothing left unsent when the window closed:\n{queued.raw}"
    assert closing.state == "FIN-WAIT-1" and closing.send_q > 0, closing.raw
    assert received == "x" * size, f"received {len(received)} of {size} bytes"
    # The FIN's own sequence number comes after the segment's data: it rides on the last data segment.
    assert fin.end == size + 1, f"FIN after seq {fin.end}, not after the {size} bytes"
    fins = [s for s in from_client(lab, 0) if "F" in s.flags]
    assert all(s.end == size + 1 for s in fins), [s.text() for s in fins]
    lab.expect_ss(lab.ss("after reading everything"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    lab.verdict(len(received) < size,
                f"with SO_RCVBUF {rcvbuf} on the server and its window at 0, shutdown(SHUT_WR) came with "
                f"{unsent} bytes not yet sent (Send-Q {queued.send_q}); the client went {closing.state} and kept "
                f"them: the server read {len(received)} of {size} bytes, then EOF; the FIN rode on the last data "
                f"segment ({fin.flags} {fin.seq}:{fin.end}({fin.length}))")
