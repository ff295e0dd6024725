"""Connection set-up: connect() against each server-side state, and the three-way handshake itself.

Articles 000, 001, 003 and 004: what the SYN, SYN+ACK and ACK carry (sequence numbers, MSS, data),
who answers with RST, what connect() on a listening socket does, and what the backlog of listen()
bounds.
"""

import time

import pytest

from harness.judge import judge, verdict_if, Verdict
from harness.record import CaseRecord
from harness.segment import match


PORT = 50000

# -- CONN-NOLISTEN ------------------------------------------------------------------------------

@judge("CONN-NOLISTEN", claims=[94, 97],
       text="a client can connect only once the server has called listen(): a SYN to a port that is only "
            "bound is answered with RST and leaves no connection on either side")
def refused_without_listen(rec: CaseRecord) -> Verdict:
    connect = rec.call("connect", role="client")
    answers = [s.flags for s in rec.segments(PORT, src="server")]
    left = rec.snapshot("client", "after connect").rows + rec.snapshot("server", "after connect").rows
    return verdict_if(answers == ["R."] and connect.errno == "ECONNREFUSED" and not left,
                      f"the SYN to a bound, non-listening port was answered by {'+'.join(answers) or 'nothing'}; "
                      f"connect() returned {connect.result()}; ss lists {len(left)} socket(s) afterwards")


@pytest.mark.claim(refused_without_listen)
def test_connect_to_bound_port_without_listen_is_refused(lab, family):
    """Server did socket()+bind() only: the SYN is answered by RST, connect() fails, ss shows nothing."""
    srv = lab.server.socket()
    srv.bind(PORT)
    lab.client.socket().connect(lab.hosts.server, PORT, check=False, timeout=5)
    lab.ss("after connect")


# -- CONN-NOACCEPT ------------------------------------------------------------------------------

@judge("CONN-NOACCEPT", claims=[95, 1, 80],
       text="a server that called listen() but never accept() still completes the three-way handshake: "
            "both sides ESTAB, the connection waits in the listener's accept queue")
def handshake_without_accept(rec: CaseRecord) -> Verdict:
    connect = rec.call("connect", role="client")
    snap = rec.snapshot("server", "after connect")
    listeners = snap.find(state="LISTEN")
    queued = listeners[0].recv_q if listeners else None
    child = rec.history("server", PORT)
    states = {"client": rec.states("client", "after connect"), "server": rec.states("server", "after connect")}
    holds = (connect.ok and states == {"client": ["ESTAB"], "server": ["ESTAB", "LISTEN"]} and queued == 1
             and child is not None and child.states[-1] == "ESTABLISHED")
    return verdict_if(holds, f"connect() returned {connect.result()} without any accept(); the server's new socket "
                             f"went {child.text() if child else '(no socket)'}; ss: client {states['client']}, "
                             f"server {states['server']}, accept queue (Recv-Q of LISTEN) {queued}")


@pytest.mark.claim(handshake_without_accept)
def test_listen_without_accept_completes_handshake(lab, family):
    """Server listens but never accepts: the handshake completes, both ESTAB, accept queue holds 1."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.client.socket().connect(lab.hosts.server, PORT, check=False, timeout=5)
    lab.wait_ss("server", lambda s: s.find(state="LISTEN") and s.find(state="LISTEN")[0].recv_q,
                what="a connection in the accept queue", timeout=2, required=False)
    lab.ss("after connect")


# -- CONN-DATA ----------------------------------------------------------------------------------

@judge("CONN-DATA", claims=[96, 4, 48],
       text="after listen()+accept() on the server and connect() on the client, both sides send and receive "
            "data over the ESTABLISHED connection")
def data_both_ways(rec: CaseRecord) -> Verdict:
    to_server = rec.call("recv", role="server").ret
    to_client = rec.call("recv", role="client").ret
    data = [f"{s.src} {s.seq}:{s.seq + s.len}" for s in rec.segments(PORT, payload=True)]
    states = {r: rec.states(r, "after the exchange") for r in ("client", "server")}
    holds = to_server == "hello" and to_client == "world" and states["client"] == ["ESTAB"] \
        and "ESTAB" in states["server"]
    return verdict_if(holds, f"the server's recv() got {to_server!r}, the client's {to_client!r}; data segments "
                             f"{', '.join(data) or 'none'}; ss shows client {states['client']}, "
                             f"server {states['server']}")


@pytest.mark.claim(data_both_ways)
def test_accept_then_data_both_ways(lab, family):
    """Server accept+recv+send, client connect+send+recv: handshake, data both ways, both ESTAB."""
    srv, conn, cli = lab.establish(PORT)
    cli.send("hello")
    conn.recv(100, timeout=2, check=False)
    conn.send("world")
    cli.recv(100, timeout=2, check=False)
    lab.wait_segment(match("client", ".", ack=6), what="the client's ACK of the server's data", required=False)
    lab.ss("after the exchange")


@pytest.mark.article("001")
@pytest.mark.article("003")
@pytest.mark.experiment("HS-SEQ")
@pytest.mark.claim("SYN seq=J, SYN+ACK seq=K ack=J+1, ACK seq=J+1 ack=K+1: a SYN carries no data "
                   "but consumes one sequence number, so data starts at J+1 and K+1")
def test_handshake_sequence_numbers(lab, family):
    """SYN seq=J, SYN+ACK seq=K ack=J+1, ACK seq=J+1 ack=K+1; the first data of each side starts after its SYN."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    conn = accepting.wait()
    cli.send("hello")
    assert conn.recv(100).ret == "hello"
    conn.send("world")
    assert cli.recv(100).ret == "world"
    lab.wait_segment(lambda s: s.src == "client" and s.ack == 6 and s.length == 0, timeout=2,
                     what="the client's ACK of the server's data")

    # Relative numbers: J and K are 0, so a SYN that consumes one number makes everything after it 1.
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  P.  1:6(5) ack 1
        server > client  .   1:1(0) ack 6
        server > client  P.  1:6(5) ack 6
        client > server  .   6:6(0) ack 6
    """)
    syn, synack, ack, cdata, _, sdata, _ = lab.segments(PORT)
    j, k = syn.raw_seq, synack.raw_seq

    def after(isn, value):
        return (value - isn) % (1 << 32)

    steps = [("SYN+ACK ack", "J", after(j, synack.raw_ack)), ("ACK seq", "J", after(j, ack.raw_seq)),
             ("ACK ack", "K", after(k, ack.raw_ack)), ("client data seq", "J", after(j, cdata.raw_seq)),
             ("server data seq", "K", after(k, sdata.raw_seq))]
    lab.verdict(syn.length == 0 and synack.length == 0 and {n for _, _, n in steps} == {1},
                f"SYN seq J={j} (length {syn.length}), SYN+ACK seq K={k} (length {synack.length}); "
                + ", ".join(f"{name} = {isn}+{n}" for name, isn, n in steps))


@pytest.mark.article("003")
@pytest.mark.experiment("HS-ACKDATA")
@pytest.mark.claim("the third segment of the handshake may carry data; a bare ACK consumes no sequence number")
@pytest.mark.parametrize("write", ["after-connect", "during-handshake"])
def test_third_segment_and_first_data(lab, family, write):
    """Client writes after connect() returned (bare ACK, data at 1) or while the handshake runs (data on the ACK)."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    if write == "after-connect":
        cli.connect(lab.hosts.server, PORT)
        cli.send("hello")
        ladder = """
            client > server  S   0:0(0)
            server > client  S.  0:0(0) ack 1
            client > server  .   1:1(0) ack 1
            client > server  P.  1:6(5) ack 1
            server > client  .   1:1(0) ack 6
        """
    else:
        # The first SYN is lost, so the client's send() is already waiting when the SYN+ACK arrives.
        lab.faults.drop("client > server", "S", count=1)
        cli.connect(lab.hosts.server, PORT, nonblocking=True, expect="EINPROGRESS")
        sending = cli.send("hello", wait=False)
        sending.wait_blocked("sk_stream_wait_connect")
        sending.wait(timeout=5)
        ladder = """
            client > server  S   0:0(0) (dropped)
            client > server  S   0:0(0)
            server > client  S.  0:0(0) ack 1
            client > server  P.  1:6(5) ack 1
            server > client  .   1:1(0) ack 6
        """
    conn = srv.accept()
    assert conn.recv(100).ret == "hello"
    lab.wait_segment(lambda s: s.src == "server" and s.ack == 6, timeout=2, what="the server's ACK of the data")

    lab.expect_segments(ladder)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED", port=PORT)
    segs = [s for s in lab.segments(PORT) if not s.dropped_by]
    third = segs[segs.index(next(s for s in segs if s.flags == "S.")) + 1]
    data = next(s for s in segs if s.src == "client" and s.length)
    if third.length:
        holds = third.seq == 1 and third.end == 6
        observed = (f"the client's send() was waiting in SYN_SENT: the third segment {third.flags} "
                    f"{third.seq}:{third.end}({third.length}) ack {third.ack} carries the data with the ACK")
    else:
        holds = data.seq == third.seq
        observed = (f"connect() returned after a bare ACK {third.seq}:{third.end}(0); the data followed in its own "
                    f"segment {data.seq}:{data.end}({data.length}) at the same sequence number, so the ACK "
                    f"consumed none; Linux did not put the data on the third segment")
    lab.verdict(holds, observed)


@pytest.mark.article("003")
@pytest.mark.experiment("HS-REJECT")
@pytest.mark.claim("a server that rejects a connection answers the SYN with RST")
def test_rejected_connection_gets_rst(lab, family):
    """SYN to a port without listener: RST,ACK and ECONNREFUSED; an application can only accept and close."""
    cli = lab.client.socket()
    refused = cli.connect(lab.hosts.server, PORT, expect="ECONNREFUSED")
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  R.  0:0(0) ack 1
    """, port=PORT)
    lab.expect_ss(lab.ss("after the refused connect"), client=[], server=[])
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> CLOSE", port=PORT)

    # An application that does not want the client can only close after accept(): too late to refuse.
    srv = lab.server.socket()
    srv.bind(PORT + 1)
    srv.listen(1)
    cli2 = lab.client.socket()
    accepted = cli2.connect(lab.hosts.server, PORT + 1)
    srv.accept().close()
    eof = cli2.recv(100)
    assert eof.ret == "", f"the client should read end of stream after the server's close: {eof.text()}"
    lab.wait_segment(lambda s: s.src == "client" and s.dport == PORT + 1 and s.ack == 2, timeout=2,
                     what="the client's ACK of the server's FIN")
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        server > client  F.  1:1(0) ack 1
        client > server  .   1:1(0) ack 2
    """, port=PORT + 1)
    lab.wait_ss("server", lambda snap: "FIN-WAIT-2" in snap.states(), what="the server's FIN-WAIT-2")
    lab.expect_ss(lab.ss("after accept() and close()"), client=["CLOSE-WAIT"], server=["LISTEN", "FIN-WAIT-2"])

    answer = [s for s in lab.segments(PORT) if s.src == "server"]
    closed = [s.flags for s in lab.segments(PORT + 1) if s.src == "server"]
    lab.verdict(refused.errno == "ECONNREFUSED" and [s.flags for s in answer] == ["R."] and answer[0].ack == 1,
                f"the SYN to a port without listener was answered by {' '.join(s.flags for s in answer)} "
                f"ack {answer[0].ack if answer else '-'} and connect() failed with {refused.errno}; with a "
                f"listener the kernel answered {closed[0]} and connect() returned {accepted.ret} before any "
                f"accept(), so an application that closes at once only sends {closed[1]} (recv() = {eof.ret!r})")


@pytest.mark.article("000")
@pytest.mark.article("003")
@pytest.mark.experiment("HS-MSS")
@pytest.mark.claim("each side announces in its SYN an MSS of the MTU minus the IP and TCP headers "
                   "(1460 on Ethernet), and data segments stay within the smaller side's MSS")
@pytest.mark.parametrize("lab_mtu, server_maxseg", [(1500, None), (1280, None), (1500, 1000)],
                         ids=["mtu1500", "mtu1280", "mtu1500-server-maxseg1000"])
def test_mss_announced_in_syns_bounds_data(lab, family, lab_mtu, server_maxseg):
    """SYN and SYN+ACK announce MTU - 40 (IPv4) or - 60 (IPv6); no data segment exceeds the smaller MSS."""
    size = 6000
    srv = lab.server.socket()
    srv.bind(PORT)
    if server_maxseg:
        srv.setsockopt("TCP_MAXSEG", server_maxseg)      # the server is the smaller side
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    conn = accepting.wait()
    cli.sendall(size=size)
    assert len(conn.recv(size, flags=["MSG_WAITALL"]).ret) == size
    conn.sendall(size=size)
    assert len(cli.recv(size, flags=["MSG_WAITALL"]).ret) == size

    headers = {"ipv4": 20 + 20, "ipv6": 40 + 20}[family]   # fixed IP header + TCP header
    link_mss = lab_mtu - headers                          # 1500: 1460 / 1440; 1280: 1240 / 1220
    server_mss = min(link_mss, server_maxseg or link_mss)
    lab.expect_segments(f"""
        client > server  S   0:0(0) <mss {link_mss},...>
        server > client  S.  0:0(0) ack 1 <mss {server_mss},...>
        client > server  .   1:1(0) ack 1
        ...
    """)
    segs = lab.segments(PORT)
    syn_mss, synack_mss = segs[0].option("mss"), segs[1].option("mss")
    data = {side: [s for s in segs if s.src == side and s.length] for side in ("client", "server")}
    options = _option_bytes(data["client"][0].options)
    option_names = ",".join(name for name, _ in data["client"][0].options)
    limit = min(syn_mss, synack_mss) - options
    sizes = {side: sorted({s.length for s in segs_}) for side, segs_ in data.items()}
    for side, segs_ in data.items():
        assert sum(s.length for s in segs_) == size, f"{side} data on the link: {sizes[side]}"
        assert max(sizes[side]) == limit, (f"{side}'s largest data segment should be the smaller MSS "
                                           f"{min(syn_mss, synack_mss)} minus {options} option bytes: {sizes[side]}")
    maxseg = {"client": cli.getsockopt("TCP_MAXSEG"), "server": conn.getsockopt("TCP_MAXSEG")}
    assert maxseg == {"client": limit, "server": limit}, f"TCP_MAXSEG of the connected sockets: {maxseg}"

    lab.verdict(syn_mss == lab_mtu - headers and synack_mss == server_mss
                and all(max(sizes[side]) <= min(syn_mss, synack_mss) for side in data),
                f"MTU {lab_mtu}, {family}: the SYN announced MSS {syn_mss} (MTU - {headers}), the SYN+ACK {synack_mss}"
                + (f" (TCP_MAXSEG {server_maxseg} on the listener)" if server_maxseg else "")
                + f"; the largest data segments were {max(sizes['client'])} bytes from the client and "
                f"{max(sizes['server'])} from the server ({min(syn_mss, synack_mss)} minus {options} bytes of "
                f"options {option_names})")


@pytest.mark.article("000")
@pytest.mark.experiment("LISTEN-CONNECT")
@pytest.mark.claim("a listening socket can open a connection itself, going from LISTEN to SYN_SENT")
def test_connect_on_listening_socket(lab, family):
    """connect() on a listening socket fails with EISCONN: no SYN leaves, the socket stays LISTEN."""
    peer = lab.client.socket()
    peer.bind(PORT + 1)
    peer.listen(1)                      # a real listener, so a SYN would be answered if one were sent
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    call = srv.connect(lab.hosts.client, PORT + 1, check=False)

    assert call.errno == "EISCONN", f"connect() on a listening socket: {call.text()}"
    lab.expect_segments("")             # nothing at all on the link
    snap = lab.ss("after connect() on the listener")
    lab.expect_ss(snap, client=["LISTEN"], server=["LISTEN"])
    listener = lab.expect_transitions("server", "CLOSE -> LISTEN", port=PORT, listener=True)

    syns = [s for s in lab.segments() if s.src == "server" and "S" in s.flags]
    lab.verdict(call.ok and bool(syns),
                f"connect() on the listening socket "
                f"{'returned ' + str(call.ret) if call.ok else 'failed with ' + call.errno}; "
                f"{len(syns)} SYN(s) left the server, its socket went only {' -> '.join(listener.states())} and ss "
                f"still shows {snap['server'].states()[0]}")


BACKLOG = 1


@pytest.mark.article("000")
@pytest.mark.experiment("BACKLOG")
@pytest.mark.claim("a TCP server has a queue of incoming connections, and so a maximum number of them")
@pytest.mark.parametrize("overflow", ["default", "abort_on_overflow"])
def test_backlog_bounds_accept_queue(lab, family, overflow):
    """listen(1), no accept(): 2 queued; a further SYN is dropped, so is a final ACK at the full queue (or reset)."""
    if overflow == "abort_on_overflow":
        lab.set_sysctl("server", "net.ipv4.tcp_abort_on_overflow", 1)
    # Every attempt ends at a defined point, however long the case runs: the extra client's SYN is
    # retransmitted after 1 s and would be again only 2 s later (doubling, not linear), and it is
    # closed right after the snapshot that shows it SYN-SENT; the late request gets one SYN+ACK
    # retransmission and then expires without another.
    lab.set_sysctl("client", "net.ipv4.tcp_syn_linear_timeouts", 0)
    lab.set_sysctl("server", "net.ipv4.tcp_synack_retries", 1)
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(BACKLOG)
    first, late, last, extra = (lab.client.socket() for _ in range(4))
    first.connect(lab.hosts.server, PORT)                              # accept queue: 1
    lab.faults.drop("client > server", ".", payload=False, count=1)    # the network loses the next final ACK,
    late.connect(lab.hosts.server, PORT)                               # so this one stays a request on the server
    last.connect(lab.hosts.server, PORT)                               # accept queue: 2, full
    extra.connect(lab.hosts.server, PORT, nonblocking=True, expect="EINPROGRESS")
    port = {name: sock.getsockname()[1] for name, sock in
            (("first", first), ("late", late), ("last", last), ("extra", extra))}
    lab.wait_counter("server", "ListenOverflows", 1)                  # the extra client's SYN

    full = lab.ss("accept queue full")
    lab.expect_ss(full, client=["ESTAB", "ESTAB", "ESTAB", "SYN-SENT"], server=["LISTEN", "SYN-RECV", "ESTAB", "ESTAB"])
    listener = full["server"].find(state="LISTEN")[0]
    assert (listener.recv_q, listener.send_q) == (BACKLOG + 1, BACKLOG), f"LISTEN Recv-Q/Send-Q:\n{full['server'].text}"
    assert full["server"].find(state="SYN-RECV")[0].peer_port == port["late"], full["server"].text
    assert full["client"].find(state="SYN-SENT")[0].local_port == port["extra"], full["client"].text

    # About 1 s later the server retransmits its SYN+ACK to `late` and `extra` retransmits its SYN.
    t = time.monotonic()
    lab.wait_segment(lambda s: s.sport == port["extra"] and s.flags == "S" and s.time > t, timeout=3,
                     what="the extra client's SYN retransmission")
    lab.wait_segment(lambda s: s.sport == port["late"] and s.flags == "." and s.time > t, timeout=3,
                     what="the late client's ACK of the retransmitted SYN+ACK")
    if overflow == "abort_on_overflow":
        lab.wait_segment(lambda s: s.dport == port["late"] and "R" in s.flags, timeout=2,
                         what="the RST to the late client")
    lab.wait_counter("server", "ListenOverflows", 3)                  # the late ACK and the second SYN
    if overflow == "abort_on_overflow":
        lab.wait_ss("client", lambda snap: not snap.find(local_port=port["late"]), what="the late client reset")
        lab.wait_ss("server", lambda snap: not snap.find(state="SYN-RECV"), what="the late request dropped")
    after = lab.ss("after the retransmissions")
    extra.close()                                                     # its attempt ends: no third SYN

    handshake = """
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
    """
    lab.expect_segments(handshake, port=port["first"])
    lab.expect_segments(handshake, port=port["last"])
    lab.expect_segments("""
        client > server  S   0:0(0) {2}
    """, port=port["extra"])
    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1 (dropped)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
    """ + ("""
        server > client  R   1:1(0)
    """ if overflow == "abort_on_overflow" else ""), port=port["late"])

    if overflow == "abort_on_overflow":
        lab.expect_ss(after, client=["ESTAB", "ESTAB", "SYN-SENT"], server=["LISTEN", "ESTAB", "ESTAB"])
        lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE", port=port["late"])
    else:
        lab.expect_ss(after, client=["ESTAB", "ESTAB", "ESTAB", "SYN-SENT"],
                      server=["LISTEN", "SYN-RECV", "ESTAB", "ESTAB"])
        request = after["server"].find(state="SYN-RECV")[0]
        assert request.timer is not None and request.timer.retrans == 1, f"the request's timer:\n{after['server'].text}"
        lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED", port=port["late"])
    for name in ("first", "last"):
        lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED", port=port[name])
    never = [str(h) for h in lab.transitions(port["late"]) if h.key[0] == lab.addr("server")]
    assert never == [], f"no server socket should exist for the late client: {never}"

    queue = {snap.label: snap.find(state="LISTEN")[0].recv_q for snap in (full["server"], after["server"])}
    extra_answers = [s for s in lab.segments(port["extra"]) if s.src == "server"]
    extra_syns = [s for s in lab.segments(port["extra"]) if s.src == "client"]
    synacks = [s for s in lab.segments(port["late"]) if s.flags == "S."]
    late_client = after["client"].find(local_port=port["late"])
    late_server = after["server"].find(peer_port=port["late"])
    lab.verdict(set(queue.values()) == {BACKLOG + 1} and not extra_answers,
                f"listen({BACKLOG}) without accept(): the accept queue (Recv-Q of LISTEN) stopped at "
                f"{listener.recv_q} with Send-Q {listener.send_q}; a further client's SYN got {len(extra_answers)} "
                f"answers, was retransmitted after {extra_syns[1].time - extra_syns[0].time:.2f} s, dropped again, "
                f"and the client stays {after['client'].find(local_port=port['extra'])[0].state}; a client whose "
                f"final ACK was lost answered the SYN+ACK the server retransmitted after "
                f"{synacks[1].time - synacks[0].time:.2f} s, but that ACK reached the full queue: the client is "
                f"{late_client[0].state if late_client else 'reset (gone from ss)'} while the server "
                f"{'keeps it as ' + late_server[0].state if late_server else 'has no entry for it'}; "
                f"TcpExt ListenOverflows = {lab.netstat('server')['TcpExt']['ListenOverflows']}")


# -- helpers ------------------------------------------------------------------------------------

OPTION_BYTES = {"nop": 1, "eol": 1, "mss": 4, "wscale": 3, "sackOK": 2, "TS": 10}


def _option_bytes(options) -> int:
    """Bytes the TCP options take in a segment, e.g. 12 for nop,nop,TS."""
    return sum(2 + 8 * len(value) if name == "sack" else OPTION_BYTES[name] for name, value in options)
