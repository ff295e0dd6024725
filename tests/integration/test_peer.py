"""The scripted peer (harness/peer.py): crafted segments, relative numbering, a silent kernel, clear errors."""

from __future__ import annotations

import pytest

from harness.errors import ExpectationFailed, ExpectationSyntaxError, StepError, StepTimeout, UnknownRole
from harness.peer import Peer

PORT = 50000


@pytest.fixture
def listener(lab):
    """Name: listener. Scope: function. Depends: lab. A server socket listening on PORT."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    return srv


@pytest.fixture
def peer(lab):
    """Name: peer. Scope: function. Depends: lab. A started Peer on the client host."""
    with lab.peer("client") as p:
        yield p


def test_syn_without_options_gets_syn_ack(lab, family, listener, peer):
    """A crafted SYN without any option is answered by a SYN+ACK that carries only the server's MSS."""
    peer.syn(PORT)
    synack = peer.expect(f"server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>")

    lab.expect_segments(f"""
        client > server  S   0:0(0) <>
        server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>
    """, port=peer.sport)
    syn = lab.segments(port=peer.sport)[0]
    assert syn.raw_seq == peer.isn, "the SYN on the wire carries the peer's ISN"
    assert peer.kernel_isn == synack.raw_seq, "expect() learns the kernel's ISN from its SYN+ACK"
    assert (synack.raw_ack - peer.isn) % (1 << 32) == 1


def test_relative_numbers_both_ways(lab, family, listener, peer):
    """send() turns relative seq/ack into absolute ones; the capture shows them relative again."""
    accepting = listener.accept(wait=False)
    peer.syn(PORT, options=[("MSS", 1460)])
    peer.expect("server > client  S.  0:0(0) ack 1")
    peer.send(".")
    conn = accepting.wait()
    peer.send("P.", payload=b"hello")
    assert conn.recv(100).ret == "hello"
    peer.expect("server > client  .   1:1(0) ack 6")      # quick ACK: the connection is new
    conn.send("world")
    data = peer.expect("server > client  P.  1:6(5) ack 6")
    assert peer.ack_of(data) == 6 and (peer.snd_nxt, peer.rcv_nxt) == (6, 6)
    peer.send(".")

    lab.expect_segments("""
        client > server  S   0:0(0) <mss 1460>
        server > client  S.  0:0(0) ack 1 <mss *>
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        server > client  P.  1:6(5) ack 6
        client > server  .   6:6(0) ack 6
    """, port=peer.sport)
    last = lab.segments(port=peer.sport)[-1]
    assert last.raw_seq == (peer.isn + 6) % (1 << 32)
    assert last.raw_ack == (peer.kernel_isn + 6) % (1 << 32)
    lab.expect_ss(lab.ss("after the exchange"), server=["LISTEN", "ESTAB"])


def test_own_kernel_sends_no_rst(lab, family, listener, peer):
    """The peer's host kernel would reset the connection it has no socket for; its RSTs never leave."""
    accepting = listener.accept(wait=False)
    peer.syn(PORT)
    peer.expect("server > client  S.  0:0(0) ack 1")
    peer.send(".")
    conn = accepting.wait()
    conn.send("data")
    peer.expect("server > client  P.  1:5(4) ack 1")
    conn.close()
    peer.expect("server > client  F.  5:5(0) ack 1")

    resets = [s for s in lab.segments() if s.src == "client" and "R" in s.flags]
    assert resets == [], f"the client kernel's RSTs reached the link: {[s.text() for s in resets]}"
    blocked = sum(lab.faults.counters(rule) for rule in peer.rules)
    assert blocked >= 3, f"the client kernel tried {blocked} RSTs (SYN+ACK, data, FIN each draw one)"


def test_expect_timeout_names_the_line_and_the_last_segment(lab, family, listener, peer):
    """expect() gives up at its deadline, naming the awaited line and the last segment the peer saw."""
    peer.syn(PORT)
    peer.expect("server > client  S.  0:0(0) ack 1")
    with pytest.raises(StepTimeout) as caught:
        peer.expect("server > client  F.  1:1(0) ack 1", timeout=0.2)
    message = str(caught.value)
    assert "server > client  F.  1:1(0) ack 1" in message, message
    assert "within 0.2 s" in message and "S.  0:0(0) ack 1" in message, message


def test_expect_fails_on_a_different_next_segment(lab, family, listener, peer):
    """The next segment from the kernel must match the line: a mismatch names the field that differs."""
    peer.syn(PORT)
    with pytest.raises(ExpectationFailed) as caught:
        peer.expect("server > client  S.  0:0(0) ack 2")
    assert "ack: expected 2, observed 1" in str(caught.value), str(caught.value)


def test_misuse_is_reported(lab, family, peer):
    """One line per expect(); ack numbers need the ACK flag and a known kernel ISN; syn() comes first."""
    with pytest.raises(ExpectationSyntaxError):
        peer.expect("server > client  S.  0:0(0)\nserver > client  .  1:1(0)")
    with pytest.raises(StepError, match="syn"):
        peer.send(".")
    peer.syn(PORT + 1)
    with pytest.raises(StepError, match="ISN"):
        peer.send(".")
    with pytest.raises(StepError, match="ACK flag"):
        peer.send("R", ack=1)
    with pytest.raises(ExpectationSyntaxError):
        peer.send("SX")


def test_peer_as_server_answers_a_kernel_connect(lab, family):
    """As the server, the peer learns the kernel's ISN and ports from its SYN; connect() completes."""
    with lab.peer("server", sport=PORT) as server_peer:
        cli = lab.client.socket()
        connecting = cli.connect(lab.hosts.server, PORT, wait=False)
        server_peer.expect("client > server  S   0:0(0) <...>")
        server_peer.send("S.", options=[("MSS", 1000)])
        server_peer.expect("client > server  .   1:1(0) ack 1")
        connecting.wait()
        cli.send("hi")
        server_peer.expect("client > server  P.  1:3(2) ack 1")
        server_peer.send(".")

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1 <mss 1000>
        client > server  .   1:1(0) ack 1
        client > server  P.  1:3(2) ack 1
        server > client  .   1:1(0) ack 3
    """)
    lab.expect_ss(lab.ss("after the exchange"), client=["ESTAB"], server=[])


def test_a_peer_takes_its_collaborators_not_the_lab(lab, family, listener):
    """Peer is built from a host, the far end, a capture and faults (what lab.peer hands it); it
    needs no lab: its SYN+ACK comes back through the capture it was given."""
    client, server = lab.topology.hosts["client"], lab.topology.hosts["server"]
    with Peer(client, server, lab.capture, lab.faults, family=family) as peer:
        peer.syn(PORT)
        peer.expect(f"server > client  S.  0:0(0) ack 1 <mss {lab.mss()}>")
        assert (peer.role, peer.hop) == ("client", server)
    with pytest.raises(UnknownRole, match="lab.peer: unknown role 'router'"):
        lab.peer("router")
