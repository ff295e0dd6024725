"""Connection set-up: what the kernel does for connect() against each server-side state (article 004)."""

import pytest

PORT = 50000


@pytest.mark.article("004")
@pytest.mark.experiment("CONN-NOLISTEN")
def test_connect_to_bound_port_without_listen_is_refused(lab, family):
    """Server did socket()+bind() only: the SYN is answered by RST, connect() fails, ss shows nothing."""
    srv = lab.server.socket()
    srv.bind(PORT)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, expect="ECONNREFUSED")

    lab.expect_segments(f"""
        client > server  S   0:0(0) <mss {lab.mss()},...>
        server > client  R.  0:0(0) ack 1
    """)
    lab.expect_ss(lab.ss("after connect"), client=[], server=[])
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> CLOSE", port=PORT)


@pytest.mark.article("004")
@pytest.mark.experiment("CONN-NOACCEPT")
def test_listen_without_accept_completes_handshake(lab, family):
    """Server listens but never accepts: the handshake completes, both ESTAB, accept queue holds 1."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)

    lab.expect_segments(f"""
        client > server  S   0:0(0) <mss {lab.mss()},...>
        server > client  S.  0:0(0) ack 1 <mss {lab.mss()},...>
        client > server  .   1:1(0) ack 1
    """)
    snap = lab.wait_ss("server", lambda s: "ESTAB" in s.states(), what="the server's ESTAB entry")
    lab.expect_ss(lab.ss("after connect"), client=["ESTAB"], server=["LISTEN", "ESTAB"])
    listener = snap.find(state="LISTEN")[0]
    assert listener.recv_q == 1, f"accept queue (Recv-Q of LISTEN) should hold 1:\n{snap.text}"
    assert listener.send_q == 5, f"Send-Q of LISTEN is the backlog given to listen():\n{snap.text}"
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED", port=PORT)
    lab.expect_transitions("server", "CLOSE -> LISTEN", port=PORT, listener=True)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED", port=PORT)


@pytest.mark.article("004")
@pytest.mark.experiment("CONN-DATA")
def test_accept_then_data_both_ways(lab, family):
    """Server accept+recv+send, client connect+send+recv: handshake, data both ways, both ESTAB."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)          # the server is blocked in accept() ...
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)         # ... while the client connects
    conn = accepting.wait()
    cli.send("hello")
    assert conn.recv(100).ret == "hello"
    conn.send("world")
    assert cli.recv(100).ret == "world"

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        server > client  P.  1:6(5) ack 6
        client > server  .   6:6(0) ack 6
    """)
    lab.expect_ss(lab.ss("after the exchange"), client=["ESTAB"], server=["LISTEN", "ESTAB"])
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED", port=PORT)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED", port=PORT)
