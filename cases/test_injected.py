"""Experiments that need segments no kernel sends on demand, made by the scripted peer (harness/peer.py).

The peer plays the client host: a SYN without an MSS option (HS-MSS-DEFAULT), an RST while the
server's request is in SYN_RECEIVED (SYNRCVD-RST), one FIN+ACK answering the server's FIN
(CLOSE-3WAY, after a look at what two kernels do on their own).
"""

import sys

import pytest

from harness.peer import Peer

PORT = 50000
RFC_DEFAULT_MSS = {"ipv4": 536, "ipv6": 1220}   # RFC 1122 4.2.2.6; IPv6: minimum MTU 1280 - 60 (RFC 8200)
WRITE = 4000                                    # several segments at either default, within the first window

# The passive side of CLOSE-3WAY's first connection: an application that closes the moment it reads
# EOF, inside one process, so nothing stands between the FIN's arrival and close() but a wake-up.
CLOSE_ON_EOF = """
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "ipv6" else socket.AF_INET
with socket.socket(family) as listener:
    listener.bind((sys.argv[2], int(sys.argv[3])))
    listener.listen(1)
    conn, _ = listener.accept()
    while conn.recv(4096):
        pass
    conn.close()
"""


@pytest.mark.article("000")
@pytest.mark.experiment("HS-MSS-DEFAULT")
@pytest.mark.claim("a peer whose SYN carries no MSS option is sent segments of the default MSS, "
                   "536 bytes (1220 for IPv6), however large the link's MTU")
def test_syn_without_mss_option_gets_default_mss(lab, family):
    """SYN without MSS option: the server cuts a large write into default-MSS segments, not link-MSS ones."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    with Peer(lab) as peer:
        peer.syn(PORT)                                  # no options at all
        peer.expect(f"server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>")
        peer.send(".")
        conn = accepting.wait()
        conn.send(size=WRITE)
        lab.wait_segment(lambda s: s.src == "server" and s.end == WRITE + 1, what=f"the server's byte {WRITE}")
        peer.send(".", ack=WRITE + 1)

    data = [s for s in lab.segments(port=peer.sport) if s.src == "server" and s.length]
    size = data[0].length                               # observed, then required of every segment
    sizes = [size] * (WRITE // size) + ([WRITE % size] if WRITE % size else [])
    starts = [1 + size * i for i in range(len(sizes))]
    lines = "\n".join(f"server > client  {'P.' if i == len(sizes) - 1 else '.'}   {a}:{a + n}({n}) ack 1"
                      for i, (a, n) in enumerate(zip(starts, sizes)))
    lab.expect_segments(f"""
        client > server  S   0:0(0) <>
        server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>
        client > server  .   1:1(0) ack 1
        {lines}
        client > server  .   1:1(0) ack {WRITE + 1}
    """, port=peer.sport)
    row = lab.ss("after the write")["server"].find(state="ESTAB")[0]
    assert row.info.get("mss") == size, f"ss reports mss:{row.info.get('mss')} for {size}-byte segments:\n{row.raw}"
    expected = RFC_DEFAULT_MSS[family]
    lab.verdict(size == expected,
                f"the server cut a {WRITE}-byte write into {len(sizes)} segments of {size} bytes "
                f"(ss: mss:{row.info.get('mss')}) although it advertised MSS {lab.mss()} itself; "
                f"the {family} default is {expected}")


@pytest.mark.article("000")
@pytest.mark.experiment("SYNRCVD-RST")
@pytest.mark.claim("a connection in SYN_RECEIVED that receives an RST returns to LISTEN")
def test_rst_in_syn_received_leaves_listener_listening(lab, family):
    """RST after the SYN+ACK: the request is dropped, the listener stays LISTEN, accept() never returns it."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)                  # a server blocked in accept(), as usual
    with Peer(lab) as peer:
        peer.syn(PORT, options=[("MSS", lab.mss())])
        peer.expect(f"server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>")
        before = lab.wait_ss("server", lambda s: s.find(state="SYN-RECV"), what="the request in SYN-RECV")
        peer.send("R", seq=1)
        after = lab.wait_ss("server", lambda s: not s.find(state="SYN-RECV"), what="the request gone")
    lab.expect_ss({"server": before}, server=["LISTEN", "SYN-RECV"])
    lab.expect_ss({"server": after}, server=["LISTEN"])
    queued = after.find(state="LISTEN")[0].recv_q
    assert queued == 0, f"accept queue after the RST:\n{after.text}"
    assert not accepting.done(), "accept() returned although no connection was established"

    # accept() is still blocked; the next connection is the first thing it returns, so the reset
    # request never reached the accept queue (a FIFO).
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    _, client_port = cli.getsockname()
    conn = accepting.wait()

    lab.expect_segments(f"""
        client > server  S   0:0(0) <mss {lab.mss()}>
        server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>
        client > server  R   1:1(0)
    """, port=peer.sport)
    lab.expect_transitions("server", "CLOSE -> LISTEN", port=PORT, listener=True)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED", port=client_port)
    traced = lab.transitions(port=peer.sport)
    assert traced == [], f"the reset request made state transitions: {traced}"
    lab.verdict(conn.peer_port == client_port and queued == 0,
                f"after the RST the request left ss, the listener stayed LISTEN with {queued} queued, "
                f"and the blocked accept() returned the next connection (port {conn.peer_port}) first; "
                f"the request never was a full socket (no traced transition)")


def _passive_after_fin(lab, port):
    """The segments the passive side sent after the client's FIN on `port`."""
    segs = lab.segments(port=port)
    fin = next(i for i, s in enumerate(segs) if s.src == "client" and "F" in s.flags)
    return [s for s in segs[fin + 1:] if s.src == "server"]


@pytest.mark.article("001")
@pytest.mark.experiment("CLOSE-3WAY")
@pytest.mark.claim("the passive closer's ACK and FIN are sent separately in most cases")
def test_passive_close_on_eof_merges_ack_and_fin(lab, family):
    """Passive side closes right at EOF: one FIN+ACK; closes after its delayed ACK: ACK, then FIN."""
    at_once, later = PORT, PORT + 1
    lab.command("server", [sys.executable, "-S", "-c", CLOSE_ON_EOF, family, lab.addr("server"), at_once])
    lab.wait_ss("server", lambda s: s.find(state="LISTEN", local_port=at_once), what="the close-on-EOF server")
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, at_once)
    cli.send("hello")                                   # data arms the server's delayed ACK (40 ms)
    lab.wait_segment(lambda s: s.src == "server" and s.sport == at_once and s.ack == 6, what="the ACK of the data")
    cli.close()
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT", peer_port=at_once), what="the client's TIME-WAIT")

    srv = lab.server.socket()
    srv.bind(later)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli2 = lab.client.socket()
    cli2.connect(lab.hosts.server, later)
    conn = accepting.wait()
    cli2.send("hello")
    assert conn.recv(100).ret == "hello"
    cli2.close()
    assert conn.recv(100).ret == "", "the server reads EOF"
    fin = lab.wait_segment(lambda s: s.src == "client" and s.dport == later and "F" in s.flags, what="the FIN")
    ack = lab.wait_segment(lambda s: s.src == "server" and s.sport == later and s.ack == 7, what="the delayed ACK")
    conn.close()                                        # only once the delayed ACK is on the wire
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT", peer_port=later), what="the client's TIME-WAIT")

    opening = """
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        client > server  F.  6:6(0) ack 1
    """
    lab.expect_segments(opening + """
        server > client  F.  1:1(0) ack 7
        client > server  .   7:7(0) ack 2
    """, port=at_once, title="close at once on EOF")
    lab.expect_segments(opening + """
        server > client  .   1:1(0) ack 7
        server > client  F.  1:1(0) ack 7
        client > server  .   7:7(0) ack 2
    """, port=later, title="close after the delayed ACK")
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                           port=at_once)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                           port=at_once)

    merged = [s.flags for s in _passive_after_fin(lab, at_once)] == ["F."]
    separate = [s.flags for s in _passive_after_fin(lab, later)] == [".", "F."]
    delay_ms = (ack.time - fin.time) * 1000
    setting = f"a passive application that closes more than its delayed-ACK time ({delay_ms:.0f} ms) after the FIN"
    lab.verdict(not merged,
                f"an application that closes at once on EOF sends {'one FIN+ACK' if merged else 'ACK and FIN apart'}; "
                f"one that closes later sends {'a separate ACK' if separate else 'no separate ACK'} "
                f"{delay_ms:.0f} ms after the FIN (the delayed ACK), then its FIN",
                setting=setting if separate else None)


@pytest.mark.article("002")
@pytest.mark.experiment("CLOSE-3WAY")
@pytest.mark.claim("FIN_WAIT_1 receiving FIN and ACK in one segment goes straight to TIME_WAIT, without FIN_WAIT_2")
def test_fin_wait_1_takes_fin_ack_to_time_wait(lab, family):
    """The server closes first; one FIN+ACK from the peer acks its FIN: FIN-WAIT-1, then TIME-WAIT at once."""
    # The server's FIN waits unacknowledged while ss looks; a retransmission (RTO >= 200 ms) would
    # come between it and the peer's FIN+ACK, so the minimum RTO is raised to 1 s for this case.
    lab.set_sysctl("server", "net.ipv4.tcp_rto_min_us", 1000000)
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    with Peer(lab) as peer:
        peer.syn(PORT, options=[("MSS", lab.mss())])
        peer.expect(f"server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>")
        peer.send(".")
        conn = accepting.wait()
        conn.close()
        peer.expect("server > client  F.  1:1(0) ack 1")
        waiting = lab.ss("the server's FIN not yet acknowledged")
        peer.send("F.")                                 # seq 1, ack 2: acks the FIN and carries the peer's own
        peer.expect("server > client  .   2:2(0) ack 2")
        done = lab.wait_ss("server", lambda s: s.find(state="TIME-WAIT"), what="the server's TIME-WAIT")

    lab.expect_segments(f"""
        client > server  S   0:0(0) <mss {lab.mss()}>
        server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>
        client > server  .   1:1(0) ack 1
        server > client  F.  1:1(0) ack 1
        client > server  F.  1:1(0) ack 2
        server > client  .   2:2(0) ack 2
    """, port=peer.sport)
    lab.expect_ss(waiting, server=["LISTEN", "FIN-WAIT-1"])
    lab.expect_ss({"server": done}, server=["LISTEN", "TIME-WAIT"])
    timer = done.find(state="TIME-WAIT")[0].timer
    assert timer is not None and timer.name == "timewait", f"TIME-WAIT without its timer:\n{done.text}"
    hist = lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                                  port=PORT)
    entered = {t.new: t.time for t in hist.transitions}
    fin_wait2_us = (entered["CLOSE"] - entered["FIN_WAIT2"]) * 1e6
    lab.verdict("FIN_WAIT2" not in hist.states(),
                f"one FIN+ACK took the server from FIN-WAIT-1 to TIME-WAIT (ss), but the kernel passed through "
                f"FIN_WAIT2 on the way, for {fin_wait2_us:.0f} us while handling that one segment: the ACK of "
                f"its FIN is processed before the FIN")
