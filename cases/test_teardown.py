"""Connection tear-down: the four-way close, who ends in which state, TIME_WAIT, and every way a
socket gets closed (kill, exit, unread data, dup/fork, descriptor exhaustion, SO_LINGER 0)."""

import signal

import pytest

from harness.segment import match

PORT = 50000
RFC793_MSL = 120.0      # RFC 793 (and RFC 9293): "arbitrarily defined to be 2 minutes"

# The article's names for the states, in the kernel's spelling.
ARTICLE_CLIENT_PATH = ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"]
ARTICLE_SERVER_PATH = ["CLOSE", "LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
KERNEL_FOR_SS = {"FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT"}


def fins_and_rsts(lab, src):
    """The FIN and the RST segments `src` sent on the case's port."""
    segs = lab.segments(PORT)
    return ([s for s in segs if s.src == src and "F" in s.flags], [s for s in segs if s.src == src and "R" in s.flags])


def timer_length(row, snap, since):
    """(low, high): the length the kernel gave `row`'s timer, started at `since`, from one ss reading of it.

    ss prints whole seconds (60 s and more as "1min"), so what was left lies in [remaining, remaining + 1),
    read at some moment between the snapshot's start and end.
    """
    return row.timer.remaining + snap.before - since, row.timer.remaining + 1 + snap.after - since


def only_listener(snap):
    """True when the host's only socket is the listener."""
    return snap.states() == ["LISTEN"]


def four_way_close(lab):
    """Client closes first, server follows: returns (client's final ACK segment, client's ss snapshot)."""
    srv, conn, cli = lab.establish(PORT)
    cli.send("hello")
    assert conn.recv(100).ret == "hello"
    lab.wait_segment(match("server", ".", ack=6), what="the server's ACK of the data")
    cli.close()
    lab.wait_segment(match("server", ".", ack=7), what="the server's ACK of the client's FIN")
    conn.close()
    final = lab.wait_segment(match("client", ".", seq=7, ack=2), what="the client's ACK of the server's FIN")
    snap = lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT"), what="the client's TIME-WAIT entry")
    return final, snap


@pytest.mark.article("000")
@pytest.mark.experiment("CLOSE-4WAY")
@pytest.mark.claim("closing takes four segments, FIN, ACK, FIN, ACK, each FIN consuming one sequence number; "
                   "the active closer ends in TIME_WAIT and the passive closer keeps no entry")
def test_four_way_close(lab, family):
    """Client then server close: FIN, ACK, FIN, ACK; the client sits in TIME-WAIT, the server keeps nothing."""
    final, _ = four_way_close(lab)

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        client > server  F.  6:6(0) ack 1
        server > client  .   1:1(0) ack 7
        server > client  F.  1:1(0) ack 7
        client > server  .   7:7(0) ack 2
    """, port=PORT)
    lab.wait_ss("server", only_listener, what="the server's connection gone (LAST_ACK closed)")
    snap = lab.ss("after the four-way close")
    lab.expect_ss(snap, client=["TIME-WAIT"], server=["LISTEN"])
    tw = snap["client"].find(state="TIME-WAIT")[0]
    assert tw.timer is not None and tw.timer.name == "timewait", f"TIME-WAIT without its timer:\n{tw.raw}"
    low, high = timer_length(tw, snap["client"], final.time)
    assert low - 0.05 <= 60 <= high + 0.05, f"TIME-WAIT timer of {low:.2f} to {high:.2f} s:\n{tw.raw}"
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE", port=PORT)

    fin_c, ack_s, fin_s, ack_c = lab.segments(PORT)[-4:]
    four = ["F" in fin_c.flags, ack_s.flags == ".", "F" in fin_s.flags, ack_c.flags == "."]
    fin_consumes = ack_s.ack == fin_c.seq + 1 and ack_c.ack == fin_s.seq + 1
    server_rows = [r for r in snap["server"].rows if r.state != "LISTEN"]
    holds = all(four) and fin_consumes and tw.timer.name == "timewait" and not server_rows
    lab.verdict(holds, f"client FIN seq {fin_c.seq} acked with {ack_s.ack}, server FIN seq {fin_s.seq} acked with "
                       f"{ack_c.ack}, as four separate segments "
                       f"({', '.join(s.flags for s in (fin_c, ack_s, fin_s, ack_c))}); the client shows TIME-WAIT "
                       f"{tw.timer_text()}, the server {[r.state for r in server_rows] if server_rows else 'no entry'}")


@pytest.mark.article("000")
@pytest.mark.experiment("CLOSE-PATHS")
@pytest.mark.claim("the client goes CLOSED, SYN_SENT, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT, CLOSED and the "
                   "server CLOSED, LISTEN, SYN_RCVD, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSED")
def test_client_and_server_state_paths(lab, family):
    """Every state of a client that closes first and of its server, from the trace and from ss where the trace stops."""
    srv, conn, cli = lab.establish(PORT)
    cli.close()
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN")
    half = lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-2"), what="the client's FIN-WAIT-2 entry")
    lab.expect_ss(lab.ss("half closed"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=2), what="the client's ACK of the server's FIN")
    end = lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT"), what="the client's TIME-WAIT entry")
    lab.wait_ss("server", only_listener, what="the server's connection gone")
    srv.close()
    lab.wait_ss("server", lambda s: not s.rows, what="the listener gone")

    client = lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                                    port=PORT)
    listener = lab.expect_transitions("server", "CLOSE -> LISTEN -> CLOSE", port=PORT, listener=True)
    server = lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                                    port=PORT)
    # The trace's last '-> CLOSE' of the client is its replacement by a timewait socket; ss shows the rest.
    seen_in_ss = [KERNEL_FOR_SS[snap.find(peer_port=PORT)[0].state] for snap in (half, end)]
    client_path = client.states()[:-1]
    for state in seen_in_ss:
        if state != client_path[-1]:
            client_path.append(state)
    tw = end.find(state="TIME-WAIT")[0]
    server_path = listener.states()[:2] + server.states()[1:]
    holds = (client_path == ARTICLE_CLIENT_PATH[:-1] and tw.timer.name == "timewait"
             and server_path == ARTICLE_SERVER_PATH)
    lab.verdict(holds, f"client: {' -> '.join(client.states()[:-1])} (trace), then {' -> '.join(seen_in_ss)} (ss, a "
                       f"timewait socket) with {tw.timer_text()} left to reach CLOSED; "
                       f"server: listener {' -> '.join(listener.states())}, the connection a new socket "
                       f"{' -> '.join(server.states())}")


@pytest.mark.article("002")
@pytest.mark.experiment("ROLES")
@pytest.mark.claim("SYN_SENT, FIN_WAIT_1/2, CLOSING and TIME_WAIT are client-only states; LISTEN, SYN_RCVD, "
                   "CLOSE_WAIT and LAST_ACK are server-only states")
def test_server_that_closes_first_ends_in_time_wait(lab, family):
    """The server closes first: the server passes FIN_WAIT into TIME-WAIT, the client CLOSE_WAIT and LAST_ACK."""
    srv, conn, cli = lab.establish(PORT)
    conn.close()
    lab.wait_segment(match("client", ".", ack=2), what="the client's ACK of the server's FIN")
    half = lab.wait_ss("server", lambda s: s.find(state="FIN-WAIT-2"), what="the server's FIN-WAIT-2 entry")
    lab.expect_ss(lab.ss("half closed"), client=["CLOSE-WAIT"], server=["LISTEN", "FIN-WAIT-2"])
    assert cli.recv(100).ret == ""
    cli.close()
    lab.wait_segment(match("server", ".", seq=2, ack=2), what="the server's ACK of the client's FIN")
    lab.wait_ss("client", lambda s: not s.rows, what="the client's connection gone")
    snap = lab.ss("after the close")
    lab.expect_ss(snap, client=[], server=["LISTEN", "TIME-WAIT"])

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  F.  1:1(0) ack 1
        client > server  .   1:1(0) ack 2
        client > server  F.  1:1(0) ack 2
        server > client  .   2:2(0) ack 2
    """, port=PORT)
    server = lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                                    port=PORT)
    client = lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                                    port=PORT)
    server_states = set(server.states()) | {KERNEL_FOR_SS[r.state] for r in half.rows + snap["server"].rows
                                            if r.state in KERNEL_FOR_SS}
    client_only = {"SYN_SENT", "FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT"}
    server_only = {"LISTEN", "SYN_RECV", "CLOSE_WAIT", "LAST_ACK"}
    wrong_side = sorted(server_states & client_only) + sorted(set(client.states()) & server_only)
    server_in_ss = [r.state for r in half.rows + snap["server"].rows if r.state != "LISTEN"]
    lab.verdict(not wrong_side, f"the server went {' -> '.join(server.states()[:-1])} (trace) then "
                                f"{' -> '.join(server_in_ss)} (ss); the client went {' -> '.join(client.states())}: "
                                f"{', '.join(wrong_side) or 'no state'} seen on the 'wrong' side")


@pytest.mark.article("000")
@pytest.mark.experiment("TIMEWAIT-LEN")
@pytest.mark.claim("TIME_WAIT lasts 2MSL, twice the maximum segment lifetime that RFC 793 sets to 2 minutes")
def test_time_wait_timer_at_entry(lab, family):
    """Just after the four-way close, ss shows the TIME-WAIT timer the kernel started: how long it runs."""
    final, snap = four_way_close(lab)
    tw = snap.find(state="TIME-WAIT")[0]
    assert tw.timer is not None and tw.timer.name == "timewait", f"TIME-WAIT without its timer:\n{tw.raw}"
    low, high = timer_length(tw, snap, final.time)
    assert low - 0.05 <= 60 <= high + 0.05, f"TIME-WAIT timer of {low:.2f} to {high:.2f} s:\n{tw.raw}"
    age = snap.time - final.time
    two_msl = 2 * RFC793_MSL
    holds = low <= two_msl <= high
    lab.verdict(holds, f"ss showed {tw.timer_text()} {age * 1000:.0f} ms after entry: the kernel started a TIME_WAIT "
                       f"timer of {low:.1f} to {high:.1f} s; 2MSL with RFC 793's MSL is {two_msl:.0f} s, and "
                       f"{low:.0f}-{high:.0f} s is 2MSL only for an MSL of {low / 2:.1f}-{high / 2:.1f} s")


@pytest.mark.slow
@pytest.mark.article("000")
@pytest.mark.experiment("TIMEWAIT-LEN")
@pytest.mark.claim("TIME_WAIT lasts 2MSL, twice the maximum segment lifetime that RFC 793 sets to 2 minutes")
def test_time_wait_full_length(lab, family):
    """Wait out the client's TIME-WAIT (deadline 70 s) and measure from entry to the entry's disappearance."""
    final, snap = four_way_close(lab)
    low, high = lab.wait_gone("client", lambda s: s.find(state="TIME-WAIT"), final.time, timeout=70, interval=0.05,
                          what="the client's TIME-WAIT entry gone")
    assert 60 - 0.05 <= high and low <= 63, f"TIME-WAIT ended {low:.3f} to {high:.3f} s after entry"
    two_msl = 2 * RFC793_MSL
    lab.verdict(low <= two_msl <= high, f"the TIME-WAIT entry went away {low:.2f} to {high:.2f} s after the final ACK "
                                        f"(ss polled every 50 ms); 2MSL with RFC 793's MSL is {two_msl:.0f} s")


@pytest.mark.article("000")
@pytest.mark.experiment("TIMEWAIT-REBIND")
@pytest.mark.claim("a server restarted within 2MSL cannot bind its port again")
def test_restarted_server_binds_over_time_wait(lab, family):
    """The old server (50000 plain, 50001 SO_REUSEADDR) closes first and exits; a new one bind()s both ports."""
    ports = {PORT: False, PORT + 1: True}          # port -> did the old server set SO_REUSEADDR?
    for port, reuse in ports.items():
        srv = lab.server.socket()
        if reuse:
            srv.setsockopt("SO_REUSEADDR", 1)
        srv.bind(port)
        srv.listen(16)
        accepting = srv.accept(wait=False)
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, port)
        conn = accepting.wait()
        conn.close()                               # the server closes first ...
        # The client's ACK of that FIN is delayed; closing before it leaves would let it cross the client's FIN.
        lab.wait_segment(lambda s: s.dport == port and s.flags == "." and s.ack == 2,
                         what=f"the client's ACK of the server's FIN on port {port}")
        assert cli.recv(100).ret == ""
        cli.close()                                # ... and so ends in TIME-WAIT
        lab.wait_segment(lambda s: s.sport == port and s.flags == "." and s.seq == 2 and s.ack == 2,
                         what=f"the server's final ACK on port {port}")
    lab.server.exit(0)                             # the old server is gone; only its TIME-WAITs hold the ports
    held = lab.wait_ss("server", lambda s: s.states() == ["TIME-WAIT"] * 2, what="only the two TIME-WAITs left")
    assert sorted(r.local_port for r in held.rows) == sorted(ports), held.text

    new = lab.program("server", "restarted")
    binds = {}                                     # (port, new server's SO_REUSEADDR) -> bind() call
    served = []                                    # (new server's connection, its client's port)
    for port in ports:
        for reuse in (False, True):
            sock = new.socket()
            if reuse:
                sock.setsockopt("SO_REUSEADDR", 1)
            binds[port, reuse] = call = sock.bind(port, check=False)
            if call.ok:
                sock.listen(16)
                accepting = sock.accept(wait=False)
                client = lab.client.socket()
                client.connect(lab.hosts.server, port)
                served.append((accepting.wait(), client.getsockname()[1]))
    assert {key: call.errno for key, call in binds.items()} == {
        (PORT, False): "EADDRINUSE", (PORT, True): "EADDRINUSE",
        (PORT + 1, False): "EADDRINUSE", (PORT + 1, True): None}, [c.text() for c in binds.values()]
    snap = lab.ss("restarted server serving next to the TIME-WAITs")
    lab.expect_ss(snap, client=["ESTAB"], server=["TIME-WAIT", "TIME-WAIT", "LISTEN", "ESTAB"])
    # The new server's connection ends here, not when the case's programs are stopped (its FIN and
    # the client's ACK would then race the end of the capture).
    for conn, client_port in served:
        since, acked = conn.close().t0, match("client", ".", ack=2, port=client_port)
        lab.wait_segment(lambda s: acked(s) and s.time > since, what="the client's ACK of the restarted server's FIN")

    def result(call):
        return "ok" if call.ok else call.errno
    both_reuse = binds[PORT + 1, True]
    failed = [key for key, call in binds.items() if not call.ok]
    lab.verdict(len(failed) == len(binds),
                "with the old server's TIME-WAIT on the port, bind() by the new server gave: old plain/new plain "
                f"{result(binds[PORT, False])}, old plain/new SO_REUSEADDR {result(binds[PORT, True])}, old "
                f"SO_REUSEADDR/new plain {result(binds[PORT + 1, False])}, both SO_REUSEADDR {result(both_reuse)}"
                + (" and the new server accepted a connection" if both_reuse.ok else ""),
                setting="unless both the old and the new server set SO_REUSEADDR"
                if both_reuse.ok and len(failed) == len(binds) - 1 else None)


@pytest.mark.article("004")
@pytest.mark.experiment("KILL-SERVER")
@pytest.mark.claim("a killed server closes its connections like a normal close: the kernel sends FIN")
def test_killed_server_sends_fin(lab, family):
    """SIGKILL the server with an idle connection: the kernel sends FIN, the client reads EOF and closes."""
    srv, conn, cli = lab.establish(PORT)
    lab.server.kill(signal.SIGKILL)
    lab.wait_segment(match("client", ".", ack=2), what="the client's ACK of the server's FIN")
    lab.wait_ss("server", lambda s: s.states() == ["FIN-WAIT-2"], what="the killed server's FIN-WAIT-2 entry")
    lab.expect_ss(lab.ss("after the kill"), client=["CLOSE-WAIT"], server=["FIN-WAIT-2"])
    eof = cli.recv(100)
    cli.close()
    lab.wait_segment(match("server", ".", seq=2, ack=2), what="the server kernel's ACK of the client's FIN")
    lab.wait_ss("client", lambda s: not s.rows, what="the client's connection gone")
    lab.expect_ss(lab.ss("after the client's close"), client=[], server=["TIME-WAIT"])

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  F.  1:1(0) ack 1
        client > server  .   1:1(0) ack 2
        client > server  F.  1:1(0) ack 2
        server > client  .   2:2(0) ack 2
    """, port=PORT)
    lab.expect_transitions("server", "CLOSE -> LISTEN -> CLOSE", port=PORT, listener=True)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=PORT)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE", port=PORT)
    fins, rsts = fins_and_rsts(lab, "server")
    lab.verdict(len(fins) == 1 and not rsts and eof.ret == "",
                f"after SIGKILL the server's kernel sent {len(fins)} FIN and {len(rsts)} RST; the client's recv() "
                f"returned {eof.ret!r} (EOF) and its close completed a four-way close, the server ending in TIME-WAIT")


@pytest.mark.article("004")
@pytest.mark.experiment("KILL-UNREAD")
@pytest.mark.claim("a process that closes or exits ends its connections with FIN (article 004's normal close), "
                   "even with unread data in its receive queue")
@pytest.mark.parametrize("how", ["close", "exit"])
def test_close_with_unread_data_resets(lab, family, how):
    """The server closes (or exits) with 5 unread bytes: what it sends, and what the client's recv() gets."""
    srv, conn, cli = lab.establish(PORT)
    cli.send("hello")
    lab.wait_segment(match("server", ".", ack=6), what="the server's ACK of the data")
    if how == "close":
        conn.close()
    else:
        lab.server.exit(0)
    lab.wait_segment(lambda s: s.src == "server" and "R" in s.flags, what="an RST from the server")
    reset = cli.recv(100, check=False)
    after = cli.recv(100, check=False)

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        server > client  R.  1:1(0) ack 6
    """, port=PORT)
    assert reset.errno == "ECONNRESET", reset.text()
    left = ["LISTEN"] if how == "close" else []
    lab.wait_ss("server", lambda s: s.states() == left, what="the server's connection gone")
    lab.expect_ss(lab.ss("after the reset"), client=[], server=left)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE", port=PORT)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE", port=PORT)
    fins, rsts = fins_and_rsts(lab, "server")
    lab.verdict(bool(fins) and not rsts,
                f"{how} with 5 unread bytes sent {len(rsts)} RST ({rsts[0].flags} {rsts[0].seq}:{rsts[0].end} ack "
                f"{rsts[0].ack}) and {len(fins)} FIN; the client's recv() failed with {reset.errno}, the next "
                f"recv() {'returned ' + repr(after.ret) if after.ok else 'failed with ' + after.errno}; "
                f"no TIME-WAIT on either side")


@pytest.mark.article("004")
@pytest.mark.experiment("REFCOUNT")
@pytest.mark.claim("close() only drops a reference to the socket; the FIN goes out when the last descriptor is closed")
@pytest.mark.parametrize("via", ["dup", "fork"])
def test_fin_only_on_last_close(lab, family, via):
    """The server's connection has two descriptors (dup, or fork): closing one sends nothing, the last sends FIN."""
    srv, conn, cli = lab.establish(PORT)
    other = conn.dup() if via == "dup" else lab.server.fork().sock(conn.fd)
    conn.close()
    other.send("ping")                  # the socket still works through the other descriptor
    assert cli.recv(100).ret == "ping"
    lab.wait_segment(match("client", ".", ack=5), what="the client's ACK of the data")
    one_left = lab.ss("one descriptor left")
    lab.expect_ss(one_left, client=["ESTAB"], server=["LISTEN", "ESTAB"])
    # A FIN from the first close() would sit before the data; the link shows none.
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  P.  1:5(4) ack 1
        client > server  .   1:1(0) ack 5
    """, port=PORT)
    fins_after_first, _ = fins_and_rsts(lab, "server")
    other.close()
    lab.wait_segment(match("client", ".", ack=6), what="the client's ACK of the server's FIN")

    lab.expect_segments("""
        ...
        client > server  .   1:1(0) ack 5
        server > client  F.  5:5(0) ack 1
        client > server  .   1:1(0) ack 6
    """, port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                           port=PORT)
    fins, _ = fins_and_rsts(lab, "server")
    lab.verdict(not fins_after_first and len(fins) == 1,
                f"closing one of two descriptors ({via}) sent {len(fins_after_first)} FIN and the socket kept sending "
                f"through the other; closing the last sent the FIN (seq {fins[0].seq})")


@pytest.mark.article("004")
@pytest.mark.experiment("FD-LEAK")
@pytest.mark.claim("a server that never closes its descriptors ends up with 'too many open files'")
def test_descriptor_leak_hits_emfile(lab, family):
    """A server with 3 descriptors to spare never closes: accept() and socket() fail with EMFILE; what clients see."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(16)
    limit = srv.fd + 3                  # the listener and two connections fit below the limit
    lab.server.setrlimit("NOFILE", limit)
    clients, accepted, refused = [], [], None
    for n in range(1, 4):
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, PORT)
        clients.append(cli)
        lab.wait_ss("server", lambda s: s.find(state="LISTEN")[0].recv_q == 1,
                    what=f"connection {n} in the accept queue")
        result = srv.accept(check=False)
        if hasattr(result, "errno"):
            refused = result
            break
        accepted.append(result)
    assert refused is not None and refused.errno == "EMFILE", f"accept() after {len(accepted)} connections: {refused}"
    assert len(accepted) == limit - srv.fd - 1, f"{len(accepted)} connections accepted below RLIMIT_NOFILE {limit}"
    no_socket = lab.server.call("socket", {"family": family, "type": "stream"}, check=False)
    assert no_socket.errno == "EMFILE", no_socket.text()
    last = clients[-1]
    last_port = last.getsockname()[1]
    last.send("hello")
    lab.wait_segment(lambda s: s.src == "server" and s.dport == last_port and s.ack == 6,
                     what="the server kernel's ACK of the unaccepted client's data")
    snap = lab.wait_ss("server", lambda s: 5 in [r.recv_q for r in s.find(state="ESTAB")],
                       what="the unaccepted connection holding the data")
    lab.expect_ss(lab.ss("after EMFILE"), client=["ESTAB"] * 3, server=["LISTEN"] + ["ESTAB"] * 3)
    queue = snap.find(state="LISTEN")[0].recv_q

    lab.verdict(refused.errno == "EMFILE" and no_socket.errno == "EMFILE",
                f"with RLIMIT_NOFILE {limit}, {len(accepted)} connections were accepted, then accept() failed with "
                f"{refused.errno} and socket() with {no_socket.errno}; all {len(clients)} clients' connect() "
                f"succeeded and the last one's data was ACKed by the kernel while it sat unaccepted "
                f"(accept queue {queue})")


@pytest.mark.article("000")
@pytest.mark.experiment("LINGER0")
@pytest.mark.claim("RST is another way to close a connection")
def test_linger_zero_close_sends_rst(lab, family):
    """SO_LINGER (1, 0) then close(): the client sends RST, no TIME-WAIT anywhere, the server's recv() fails."""
    srv, conn, cli = lab.establish(PORT)
    cli.setsockopt("SO_LINGER", (1, 0))
    cli.close()
    lab.wait_segment(lambda s: s.src == "client" and "R" in s.flags, what="an RST from the client")
    reset = conn.recv(100, check=False)

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  R.  1:1(0) ack 1
    """, port=PORT)
    assert reset.errno == "ECONNRESET", reset.text()
    snap = lab.ss("after the reset")
    lab.expect_ss(snap, client=[], server=["LISTEN"])
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE", port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE", port=PORT)
    fins, rsts = fins_and_rsts(lab, "client")
    time_wait = snap["client"].find(state="TIME-WAIT") + snap["server"].find(state="TIME-WAIT")
    lab.verdict(len(rsts) == 1 and not fins and not time_wait and reset.errno is not None,
                f"close() with SO_LINGER (1, 0) sent {len(rsts)} RST and {len(fins)} FIN; no TIME-WAIT on either side; "
                f"both sockets went ESTABLISHED -> CLOSE; the server's recv() failed with {reset.errno}")


@pytest.mark.article("004")
@pytest.mark.experiment("EXIT-CLOSE")
@pytest.mark.claim("when a process exits the kernel closes its sockets and starts the close with FIN")
def test_exit_without_close_sends_fin(lab, family):
    """The client exits without close(): its kernel sends FIN; the server reads EOF and closes."""
    srv, conn, cli = lab.establish(PORT)
    lab.client.exit(0)
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN")
    lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="the exited client's FIN-WAIT-2 entry")
    lab.expect_ss(lab.ss("after exit"), client=["FIN-WAIT-2"], server=["LISTEN", "CLOSE-WAIT"])
    eof = conn.recv(100)
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=2), what="the client kernel's ACK of the server's FIN")
    lab.wait_ss("server", only_listener, what="the server's connection gone")
    lab.expect_ss(lab.ss("after the server's close"), client=["TIME-WAIT"], server=["LISTEN"])

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  F.  1:1(0) ack 2
        client > server  .   2:2(0) ack 2
    """, port=PORT)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=PORT)
    fins, rsts = fins_and_rsts(lab, "client")
    lab.verdict(len(fins) == 1 and not rsts and eof.ret == "",
                f"the client exited without close(); its kernel sent {len(fins)} FIN and {len(rsts)} RST, the "
                f"server's recv() returned {eof.ret!r} (EOF) and the client ended in TIME-WAIT")
