"""Connection tear-down with segments dropped or held on the path (articles 000, 001, 002).

Retransmission timers are shortened with a per-namespace tcp_rto_min_us where a case waits for a
retransmission, and lengthened where a case holds segments and must not see one (SIM-CLOSE).
"""

import pytest

PORT = 50000
FAST_RTO_US = 10_000        # retransmissions after ~16 ms instead of ~200 ms
SLOW_RTO_US = 1_000_000     # no retransmission can sneak into a hold of a few ms


def _rto_min(lab, usecs: int) -> None:
    """Set tcp_rto_min_us in both namespaces; sockets read it when they are created."""
    for role in ("client", "server"):
        lab.set_sysctl(role, "net.ipv4.tcp_rto_min_us", usecs)


def _connect(lab, srv):
    """A connected pair: (client socket, accepted server socket, the client's port)."""
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    conn = srv.accept()
    return cli, conn, cli.getsockname()[1]


def _listener(lab):
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    return srv


def _ms(values) -> str:
    return ", ".join(f"{v * 1000:.1f}" for v in values)


@pytest.mark.article("002")
@pytest.mark.experiment("FINWAIT1-SEEN")
@pytest.mark.claim("FIN_WAIT_1 is rarely seen because the peer ACKs a FIN at once; FIN_WAIT_2 is seen often")
def test_fin_wait_1_lasts_while_the_ack_is_held(lab, family):
    """A normal close leaves FIN_WAIT1 within ms; with the peer's ACKs dropped, ss shows FIN-WAIT-1 and FINs repeat."""
    _rto_min(lab, FAST_RTO_US)
    srv = _listener(lab)

    quick, _, quick_port = _connect(lab, srv)
    quick.close()
    orphan = lab.wait_ss("client", lambda s: s.find(local_port=quick_port, state="FIN-WAIT-2"),
                         what="FIN-WAIT-2 after a normal close").find(local_port=quick_port)[0]
    normal = lab.expect_transitions("client", "... -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE", port=quick_port)
    normal_fw1 = normal.transitions[-2].time - normal.transitions[-3].time
    peer_fin = lab.expect_transitions("server", "... -> ESTABLISHED -> CLOSE_WAIT", port=quick_port).transitions[-1]
    ack_delay = normal.transitions[-2].time - peer_fin.time

    cli, _, port = _connect(lab, srv)
    # Five ACKs dropped, the sixth passes: a hold of ~0.2 s that ends by itself, so the segments
    # and nftables' counter are exact (a release() would race the next retransmission).
    rule = lab.faults.drop("server > client", ".", payload=False, count=5)
    cli.close()
    held = lab.wait_ss("client", lambda s: s.find(local_port=port, state="FIN-WAIT-1"),
                       what="FIN-WAIT-1 while the ACKs are dropped").find(local_port=port)[0]
    lab.wait_ss("client", lambda s: s.find(local_port=port, state="FIN-WAIT-2"), timeout=3,
                what="FIN-WAIT-2 once an ACK passes")

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2 (dropped)
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2 (dropped)
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2 (dropped)
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2 (dropped)
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2 (dropped)
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
    """, port=port)
    segs = lab.segments(port=port)
    assert not segs[-1].dropped_by and lab.faults.counters(rule) == 5, "exactly five ACKs dropped"
    fins = [s for s in segs if s.has("F")]
    intervals = [b.time - a.time for a, b in zip(fins, fins[1:])]
    hist = lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                                  port=port)
    held_fw1 = hist.transitions[-2].time - hist.transitions[-3].time

    # "Rarely seen": FIN_WAIT1 lasts until the peer's ACK, FIN_WAIT2 (orphaned) for tcp_fin_timeout.
    lab.verdict(held.state == "FIN-WAIT-1" and normal_fw1 * 100 < orphan.timer.remaining,
                f"in a normal close FIN_WAIT1 lasted {normal_fw1 * 1000:.2f} ms (trace: the peer's ACK came "
                f"{ack_delay * 1000:.2f} ms after it took the FIN into CLOSE_WAIT), while the orphaned FIN-WAIT-2 "
                f"that followed has a {orphan.timer.remaining:.0f} s timer in ss; with the peer's ACKs dropped "
                f"ss showed FIN-WAIT-1 (timer {held.timer.name}) for {held_fw1 * 1000:.0f} ms, the FIN sent "
                f"{len(fins)} times at intervals {_ms(intervals)} ms (tcp_rto_min_us={FAST_RTO_US})")


@pytest.mark.article("000")
@pytest.mark.experiment("SIM-CLOSE")
@pytest.mark.claim("when both sides close at once, each goes FIN_WAIT_1 -> CLOSING -> TIME_WAIT")
def test_simultaneous_close(lab, family):
    """Both close() with both FINs held until both are sent: the FINs cross, both CLOSING, both TIME-WAIT."""
    _rto_min(lab, SLOW_RTO_US)
    srv = _listener(lab)
    cli, conn, port = _connect(lab, srv)
    with lab.faults.delay("client") as client_held, lab.faults.delay("server") as server_held:
        cli.close()
        conn.close()
        both_closed = lab.ss("both FINs sent and held")
        client_held.release()                   # the client's FIN reaches a server in FIN_WAIT1 ...
        half = lab.wait_ss("server", lambda s: "CLOSING" in s.states(), what="the server's CLOSING")
        server_held.release()                   # ... and the server's FIN, sent before, reaches the client
    done = {role: lab.wait_ss(role, lambda s: "TIME-WAIT" in s.states(), what="TIME-WAIT")
            for role in ("client", "server")}

    lab.expect_ss(both_closed, client=["FIN-WAIT-1"], server=["LISTEN", "FIN-WAIT-1"])
    lab.expect_ss({"server": half}, server=["LISTEN", "CLOSING"])
    lab.expect_ss(done, client=["TIME-WAIT"], server=["LISTEN", "TIME-WAIT"])
    # The server's FIN acknowledges only the SYN (ack 1): it left before the client's FIN arrived.
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  F.  1:1(0) ack 1
        ...
    """, port=port)
    # Then each side ACKs the other's FIN; which ACK crosses the link first depends on when the
    # receive softirq runs, so only the set is checked.
    segs = lab.segments(port=port)
    acks = sorted((s.src, s.seq, s.end, s.ack) for s in segs[5:])
    assert all(s.flags == "." for s in segs[5:]) and {a[0] for a in acks} == {"client", "server"} \
        and all(a[1:] == (2, 2, 2) for a in acks), "\n".join(s.text() for s in segs)
    chains = [lab.expect_transitions(role, "... -> ESTABLISHED -> FIN_WAIT1 -> CLOSING -> CLOSE", port=port).states()
              for role in ("client", "server")]

    timers = [done[role].find(state="TIME-WAIT")[0].timer for role in ("client", "server")]
    lab.verdict(all(c[-3:] == ["FIN_WAIT1", "CLOSING", "CLOSE"] for c in chains)
                and all(t.name == "timewait" for t in timers),
                f"with both FINs in flight at once both sides went FIN_WAIT1 -> CLOSING (trace; ss showed the "
                f"server CLOSING), then -> CLOSE in the trace as each became a timewait socket: ss shows TIME-WAIT "
                f"on both (timers {timers[0].remaining:.0f} s and {timers[1].remaining:.0f} s); each FIN carried "
                f"ack 1; ACKs of the other's FIN: client {sum(a[0] == 'client' for a in acks)}, "
                f"server {sum(a[0] == 'server' for a in acks)}")


@pytest.mark.article("001")
@pytest.mark.experiment("TIMEWAIT-ACK")
@pytest.mark.claim("TIME_WAIT exists so that a lost final ACK can be sent again when the peer retransmits its FIN")
def test_time_wait_acks_the_retransmitted_fin(lab, family):
    """The final ACK dropped once: LAST_ACK retransmits its FIN, the TIME_WAIT side ACKs again, LAST_ACK closes."""
    _rto_min(lab, FAST_RTO_US)
    srv = _listener(lab)
    cli, conn, port = _connect(lab, srv)
    cli.close()
    lab.wait_ss("client", lambda s: "FIN-WAIT-2" in s.states(), what="the client's FIN-WAIT-2")
    rule = lab.faults.drop("client > server", ".", payload=False, count=1)
    conn.close()
    gone = lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone")
    waiting = lab.ss("after LAST_ACK closed")["client"]

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  F.  1:1(0) ack 2
        client > server  .   2:2(0) ack 2 (dropped)
        server > client  F.  1:1(0) ack 2
        client > server  .   2:2(0) ack 2
    """, port=port)
    segs = lab.segments(port=port)
    assert lab.faults.counters(rule) == 1 and not segs[-1].dropped_by, "exactly the first final ACK is dropped"
    lab.expect_ss({"server": gone, "client": waiting}, server=["LISTEN"], client=["TIME-WAIT"])
    server = lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                                    port=port)
    last_ack = server.transitions[-1].time - server.transitions[-2].time
    resent = segs[7].time - segs[5].time

    lab.verdict(segs[7].has("F") and segs[8].src == "client" and not segs[8].dropped_by
                and server.states()[-2:] == ["LAST_ACK", "CLOSE"],
                f"the final ACK was dropped; the LAST_ACK side retransmitted its FIN {resent * 1000:.1f} ms later "
                f"(tcp_rto_min_us={FAST_RTO_US}), the client's timewait socket ACKed it again, and the server "
                f"went LAST_ACK -> CLOSE after {last_ack * 1000:.1f} ms; the client stays TIME-WAIT "
                f"(timer {waiting.find(state='TIME-WAIT')[0].timer.remaining:.0f} s)")
