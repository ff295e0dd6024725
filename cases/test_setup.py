"""Connection set-up: connect() against each server-side state, and the three-way handshake itself.

Articles 000, 001, 003 and 004: what the SYN, SYN+ACK and ACK carry (sequence numbers, MSS, data),
who answers with RST, what connect() on a listening socket does, and what the backlog of listen()
bounds.
"""

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


# -- HS-SEQ -------------------------------------------------------------------------------------

def _entered(hist, state):
    """When the socket of `hist` entered `state` (seconds into the case), None if it never did."""
    if hist is None or state not in hist.states[1:]:
        return None
    i = hist.states.index(state, 1) - 1
    return hist.times[i] if i < len(hist.times) else None


def _after(hist, state):
    """The state a socket went to from `state`, None when it never left it (or never was in it)."""
    if hist is None or state not in hist.states[:-1]:
        return None
    return hist.states[hist.states.index(state) + 1]


def _handshake(rec, port):
    """(SYN, SYN+ACK, third segment) of the connection on `port`, each None when it is not there."""
    segs = rec.segments(port, dropped=False)
    syn = next((s for s in segs if s.src == "client" and s.flags == "S"), None)
    synack = next((s for s in segs if s.src == "server" and s.has("S")), None)
    third = next((s for s in segs if synack and s.src == "client" and s.t >= synack.t and not s.has("S")), None)
    return syn, synack, third


@judge("HS-SEQ", claims=[45, 65, 2],
       text="connect() sends a SYN with seq=J and no data and puts the client in SYN_SENT, where it waits for "
            "the matching SYN+ACK; its first data byte is J+1")
def syn_and_syn_sent(rec: CaseRecord) -> Verdict:
    syn, synack, _ = _handshake(rec, PORT)
    client = rec.history("client", PORT)
    data = next(iter(rec.segments(PORT, src="client", payload=True)), None)
    sent_at, left_at = _entered(client, "SYN_SENT"), _entered(client, _after(client, "SYN_SENT") or "-")
    isn = rec.facts.get("isn", {}).get("client", "J")
    holds = (syn is not None and syn.seq == 0 and syn.len == 0 and sent_at is not None and sent_at <= syn.t
             and _after(client, "SYN_SENT") == "ESTABLISHED" and synack is not None and left_at is not None
             and left_at >= synack.t - 0.001 and data is not None and data.seq == 1)
    return verdict_if(holds, f"the client's socket went {client.text() if client else '(no socket traced)'}; its SYN "
                             f"(seq J={isn}) carried {syn.len if syn else '-'} bytes; it entered SYN_SENT "
                             f"{'before' if syn and sent_at is not None and sent_at <= syn.t else 'not before'} "
                             f"the SYN left and left it {((left_at - synack.t) * 1e6) if synack and left_at else float('nan'):.0f} us "
                             f"after the SYN+ACK arrived; its first data byte was J+{data.seq if data else '-'}")


@judge("HS-SEQ", claims=[46, 54, 61, 84, 75],
       text="the server answers the SYN with one segment that carries both SYN and ACK: its own seq=K, no data, "
            "ack=J+1; its socket passes SYN_RECV; the client answers with an ACK; the server's data starts at K+1")
def synack_in_one_segment(rec: CaseRecord) -> Verdict:
    _, synack, third = _handshake(rec, PORT)
    server = rec.history("server", PORT)
    data = next(iter(rec.segments(PORT, src="server", payload=True)), None)
    isn = rec.facts.get("isn", {}).get("server", "K")
    holds = (synack is not None and set(synack.flags) == {"S", "."} and synack.seq == 0 and synack.len == 0
             and synack.ack == 1 and server is not None and "SYN_RECV" in server.states
             and third is not None and third.has(".") and data is not None and data.seq == 1)
    return verdict_if(holds, f"the server's answer was {synack.text if synack else 'nothing'} (K={isn}); its socket "
                             f"went {server.text() if server else '(no socket traced)'}; the client answered "
                             f"{third.text if third else 'nothing'}; the server's first data byte was "
                             f"K+{data.seq if data else '-'}")


@judge("HS-SEQ", claims=[47, 86, 13],
       text="the client's ACK (seq=J+1, ack=K+1) is the third and last segment needed: after it both sides are "
            "ESTABLISHED")
def three_segments_establish(rec: CaseRecord) -> Verdict:
    syn, synack, third = _handshake(rec, PORT)
    client, server = rec.history("client", PORT), rec.history("server", PORT)
    est = {"client": _entered(client, "ESTABLISHED"), "server": _entered(server, "ESTABLISHED")}
    before = [s for s in rec.segments(PORT) if est["server"] is not None and s.t <= est["server"]]
    states = {r: rec.states(r, "after the exchange") for r in ("client", "server")}
    holds = (third is not None and third.flags == "." and (third.seq, third.ack, third.len) == (1, 1, 0)
             and None not in est.values() and len(before) == 3 and states["client"] == ["ESTAB"]
             and "ESTAB" in states["server"])
    return verdict_if(holds, f"the third segment was {third.text if third else 'missing'}; the server's socket became "
                             f"ESTABLISHED after {len(before)} segment(s) on the link, the client's "
                             f"{'at the SYN+ACK' if est['client'] is not None else 'never'}; ss after the exchange: "
                             f"client {states['client']}, server {states['server']}")


@pytest.mark.claim(syn_and_syn_sent)
@pytest.mark.claim(synack_in_one_segment)
@pytest.mark.claim(three_segments_establish)
def test_handshake_sequence_numbers(lab, family):
    """Listener, accept, connect, data both ways: the handshake's seq/ack, the states, where the data starts."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
    conn = accepting.wait(timeout=5)
    cli.send("hello")
    conn.recv(100, timeout=2, check=False)
    conn.send("world")
    cli.recv(100, timeout=2, check=False)
    lab.wait_segment(match("client", ".", ack=6, length=0), timeout=2, what="the client's ACK of the server's data",
                     required=False)
    lab.ss("after the exchange")
    syns = {s.src: s.raw_seq for s in lab.segments(PORT) if s.has("S")}
    lab.observe("isn", syns)             # absolute J and K, for the evidence (the record is relative)


# -- HS-ACKDATA ---------------------------------------------------------------------------------

@judge("HS-ACKDATA", claims=[87],
       text="the third segment of the handshake may carry data; a bare ACK consumes no sequence number")
def third_segment(rec: CaseRecord) -> Verdict:
    _, _, third = _handshake(rec, PORT)
    data = next(iter(rec.segments(PORT, src="client", payload=True, dropped=False)), None)
    if third is not None and third.len:
        holds = third.seq == 1 and third.has(".")
        said = (f"the client's send() waited in SYN_SENT and the third segment {third.text} carried the data with "
                f"the ACK")
    else:
        holds = third is not None and data is not None and data.seq == third.seq
        said = (f"connect() returned after a bare ACK ({third.text if third else 'no third segment'}); the data "
                f"followed in {data.text if data else 'no segment'}, so the ACK consumed "
                f"{(data.seq - third.seq) if data and third else '?'} sequence numbers")
    return verdict_if(holds, said)


@pytest.mark.claim(third_segment)
@pytest.mark.parametrize("write", ["after-connect", "during-handshake"])
def test_third_segment_and_first_data(lab, family, write):
    """Client writes after connect() returned (bare ACK, data at 1) or while the handshake runs (data on the ACK)."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    if write == "after-connect":
        cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
        cli.send("hello", check=False)
    else:
        # The SYNs are held until the client's send() waits in SYN_SENT; the next retransmission passes.
        syns = lab.faults.hold("client > server", "S")
        cli.connect(lab.hosts.server, PORT, nonblocking=True, expect="EINPROGRESS")
        sending = cli.send("hello", wait=False)
        sending.wait_blocked("sk_stream_wait_connect")
        syns.release()
        sending.wait(timeout=5)
    conn = accepting.wait(timeout=5)
    conn.recv(100, timeout=2, check=False)
    lab.wait_segment(match("server", ".", ack=6), timeout=2, what="the server's ACK of the data", required=False)


# -- HS-REJECT ----------------------------------------------------------------------------------

@judge("HS-REJECT", claims=[85], text="a server that rejects a connection answers the SYN with RST")
def reject_answers_rst(rec: CaseRecord) -> Verdict:
    refused = rec.call("connect", role="client", n=0)
    answer = rec.segments(PORT, src="server")
    later = [s.flags for s in rec.segments(PORT + 1, src="server")]
    accepted = rec.call("connect", role="client", n=1)
    eof = rec.call("recv", role="client")
    holds = [s.flags for s in answer] == ["R."] and answer[0].ack == 1 and refused.errno == "ECONNREFUSED"
    return verdict_if(holds, f"the SYN to a port without listener was answered by "
                             f"{' '.join(s.text for s in answer) or 'nothing'} and connect() returned {refused.result()}; "
                             f"with a listener the kernel answered {later[0] if later else 'nothing'} itself and "
                             f"connect() returned {accepted.result()} before any accept(), so an application that "
                             f"closes at once sends {' '.join(later[1:]) or 'nothing'} (the client's recv() = "
                             f"{eof.result()})")


@pytest.mark.claim(reject_answers_rst)
def test_rejected_connection_gets_rst(lab, family):
    """SYN to a port without listener: RST,ACK and ECONNREFUSED; an application can only accept and close."""
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
    lab.ss("after the refused connect")

    # An application that does not want the client can only close after accept(): too late to refuse.
    srv = lab.server.socket()
    srv.bind(PORT + 1)
    srv.listen(1)
    cli2 = lab.client.socket()
    cli2.connect(lab.hosts.server, PORT + 1, check=False, timeout=5)
    srv.accept(timeout=2).close()
    cli2.recv(100, timeout=2, check=False)
    lab.wait_segment(lambda s: s.src == "client" and s.dport == PORT + 1 and s.ack == 2, timeout=2,
                     what="the client's ACK of the server's FIN", required=False)
    # The ACK is on the link before the server has taken it: wait for the orphan's FIN-WAIT-2 (the
    # timewait socket that replaces it, whose `FIN_WAIT2 -> CLOSE` event then follows at once).
    lab.wait_ss("server", lambda s: s.find(local_port=PORT + 1, state="FIN-WAIT-2"), timeout=2, required=False,
                what="the server's connection in FIN-WAIT-2")
    lab.ss("after accept() and close()")


# -- HS-MSS -------------------------------------------------------------------------------------

@judge("HS-MSS", claims=[17],
       text="each side announces in its SYN an MSS of the MTU minus the IP and TCP headers (1460 on Ethernet), "
            "and data segments stay within the smaller side's MSS")
def mss_is_mtu_minus_headers(rec: CaseRecord) -> Verdict:
    headers = {"ipv4": 40, "ipv6": 60}[rec.family]
    maxseg = rec.facts.get("server_maxseg")
    syn, synack, _ = _handshake(rec, PORT)
    syn_mss, synack_mss = (syn.option("mss") if syn else None), (synack.option("mss") if synack else None)
    data = {side: [s.len for s in rec.segments(PORT, src=side, payload=True)] for side in ("client", "server")}
    smaller = min(m for m in (syn_mss, synack_mss, 1 << 16) if isinstance(m, int))
    link = rec.mtu - headers
    holds = (syn_mss == link and synack_mss == min(link, maxseg or link)
             and all(sizes and max(sizes) <= smaller for sizes in data.values()))
    return verdict_if(holds, f"MTU {rec.mtu}, {rec.family}: the SYN announced MSS {syn_mss} (MTU - {headers} = {link}), "
                             f"the SYN+ACK {synack_mss}" + (f" (TCP_MAXSEG {maxseg} on the listener)" if maxseg else "")
                             + f"; the largest data segments were {max(data['client'], default=0)} bytes from the "
                             f"client and {max(data['server'], default=0)} from the server (the smaller MSS {smaller} "
                             f"less the TCP options each carries)")


@pytest.mark.claim(mss_is_mtu_minus_headers)
@pytest.mark.parametrize("lab_mtu, server_maxseg", [(1500, None), (1280, None), (1500, 1000)],
                         ids=["mtu1500", "mtu1280", "mtu1500-server-maxseg1000"])
def test_mss_announced_in_syns_bounds_data(lab, family, lab_mtu, server_maxseg):
    """SYN and SYN+ACK announce MTU - 40 (IPv4) or - 60 (IPv6); no data segment exceeds the smaller MSS."""
    size = 6000
    srv = lab.server.socket()
    srv.bind(PORT)
    if server_maxseg:
        srv.setsockopt("TCP_MAXSEG", server_maxseg)      # the server is the smaller side
        lab.observe("server_maxseg", server_maxseg)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
    conn = accepting.wait(timeout=5)
    cli.sendall(size=size)
    conn.recv(size, flags=["MSG_WAITALL"], timeout=3, check=False)
    conn.sendall(size=size)
    cli.recv(size, flags=["MSG_WAITALL"], timeout=3, check=False)
    cli.getsockopt("TCP_MAXSEG")
    conn.getsockopt("TCP_MAXSEG")


# -- LISTEN-CONNECT -----------------------------------------------------------------------------

@judge("LISTEN-CONNECT", claims=[26],
       text="a listening socket can open a connection itself, going from LISTEN to SYN_SENT")
def listener_connects(rec: CaseRecord) -> Verdict:
    call = rec.call("connect", role="server")
    syns = rec.segments(src="server", flags="S")
    listener = rec.history("server", PORT, listener=True)
    snap = rec.snapshot("server", "after connect() on the listener")
    row = next(iter(snap.find(local_port=PORT)), None)
    holds = call.ok and bool(syns) and listener is not None and _after(listener, "LISTEN") == "SYN_SENT"
    return verdict_if(holds, f"connect() on the listening socket returned {call.result()}; {len(syns)} SYN(s) left "
                             f"the server; its socket went {listener.text() if listener else '(not traced)'} and ss "
                             f"shows it {row.state if row else 'gone'}")


@pytest.mark.claim(listener_connects)
def test_connect_on_listening_socket(lab, family):
    """connect() on a listening socket: what it returns, whether a SYN leaves, the socket's state."""
    peer = lab.client.socket()
    peer.bind(PORT + 1)
    peer.listen(1)                      # a real listener, so a SYN would be answered if one were sent
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    srv.connect(lab.hosts.client, PORT + 1, check=False, timeout=5)   # a blocking connect: done when it returns
    lab.ss("after connect() on the listener")


# -- BACKLOG ------------------------------------------------------------------------------------

BACKLOG = 1
LATE = PORT + 11                  # the client whose final ACK is held: its request stays on the server


def _queued(lab, port, n, what=None):
    """Wait until the listener on `port` holds `n` connections in its accept queue: the server has
    processed the last final ACK before the next client's SYN leaves (veth delivers on the sending
    CPU, so without this a SYN could overtake the ACK sent before it)."""
    lab.wait_ss("server", lambda s: any((r.recv_q or 0) >= n for r in s.find(state="LISTEN", local_port=port)),
                timeout=2, what=what or f"port {port}: {n} in the accept queue", required=False)


def _queue(snap):
    """(Recv-Q, Send-Q) of the listener in a server snapshot, (None, None) when there is none."""
    row = next(iter(snap.find(state="LISTEN", local_port=PORT)), None)
    return (row.recv_q, row.send_q) if row else (None, None)


@judge("BACKLOG", claims=[43],
       text="a TCP server has a queue of incoming connections, and so a maximum number of them: listen(n) "
            "without accept() admits only so many")
def queue_bounds_connections(rec: CaseRecord) -> Verdict:
    ports = rec.fact("ports")
    full, after = rec.snapshot("server", "accept queue full"), rec.snapshot("server", "after the late ACK")
    queued, limit = _queue(full)
    extra_answers = rec.segments(ports["extra"], src="server")
    extra_row = next(iter(rec.snapshot("client", "after the late ACK").find(local_port=ports["extra"])), None)
    late_server = next(iter(after.find(peer_port=ports["late"])), None)
    late_client = next(iter(rec.snapshot("client", "after the late ACK").find(local_port=ports["late"])), None)
    late_rst = rec.segments(ports["late"], src="server", flags="R")
    overflows = [rec.counter("server", label, "ListenOverflows") for label in ("accept queue full", "after the late ACK")]
    established = len(full.find(state="ESTAB"))
    holds = (queued is not None and queued <= (limit or 0) + 1 and established == queued and not extra_answers
             and (late_server is None or late_server.state != "ESTAB"))
    return verdict_if(holds, f"listen({limit}) without accept(): the accept queue (Recv-Q of LISTEN) held {queued} with "
                             f"{established} ESTAB; a further client's SYN got {len(extra_answers)} answer(s) and "
                             f"the client stayed {extra_row.state if extra_row else 'gone'}; the ACK of a client whose "
                             f"request was waiting reached the full queue: the server "
                             f"{'answered RST' if late_rst else 'sent no RST'} and kept it as "
                             f"{late_server.state if late_server else 'nothing'}, the client is "
                             f"{late_client.state if late_client else 'gone'}; TcpExt ListenOverflows "
                             f"{overflows[0]} then {overflows[1]}")


@pytest.mark.claim(queue_bounds_connections)
@pytest.mark.parametrize("overflow", ["default", "abort_on_overflow"])
def test_backlog_bounds_accept_queue(lab, family, overflow):
    """listen(1), no accept(): how many are queued, what a further SYN and a late final ACK get."""
    if overflow == "abort_on_overflow":
        lab.set_sysctl("server", "net.ipv4.tcp_abort_on_overflow", 1)
    # Every attempt ends at a defined point: the late request gets one SYN+ACK retransmission (after
    # 1 s), answered by the ACK the released hold lets pass, and expires silently without another; the
    # extra client's SYN retransmissions never leave its host. Few steps come between the late SYN and
    # the release, so the release comes well before that retransmission.
    lab.set_sysctl("server", "net.ipv4.tcp_synack_retries", 1)
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(BACKLOG)
    first, late, last, extra = (lab.client.socket() for _ in range(4))
    late.bind(LATE)
    first.connect(lab.hosts.server, PORT, check=False, timeout=5)             # accept queue: 1
    _queued(lab, PORT, 1)
    held = lab.faults.hold("client > server", ".", payload=False, port=LATE)  # the final ACK of `late`:
    late.connect(lab.hosts.server, PORT, check=False, timeout=5)              # its request waits
    last.connect(lab.hosts.server, PORT, check=False, timeout=5)              # accept queue: 2
    _queued(lab, PORT, 2, what="accept queue full")
    held.release()             # the answer to the retransmitted SYN+ACK will meet a full queue
    seen = lab.netstat("server", label="accept queue full")["TcpExt"].get("ListenOverflows", 0)
    extra.connect(lab.hosts.server, PORT, nonblocking=True, check=False)
    ports = {name: sock.getsockname()[1] for name, sock in
             (("first", first), ("late", late), ("last", last), ("extra", extra))}
    lab.faults.block_output("client", "S", port=ports["extra"])
    lab.observe("ports", ports)

    lab.wait_counter("server", "ListenOverflows", seen + 2, timeout=3, required=False)  # extra's SYN, the late ACK
    if overflow == "abort_on_overflow":
        lab.wait_ss("client", lambda s: not s.find(local_port=LATE), timeout=1, what="the late client reset",
                    required=False)
    lab.netstat("server", label="after the late ACK")
    lab.ss("after the late ACK")


# -- HS-REJECT-OVERFLOW -------------------------------------------------------------------------

LATE_DEFAULT, LATE_ABORT = PORT + 12, PORT + 13


def _full_queue_with_a_waiting_request(lab, port, late_port):
    """A listener on `port` with listen(1): one request whose final ACKs are held (client `late_port`),
    then two connections in the accept queue, which is full. Returns (the late client, its hold rule)."""
    srv = lab.server.socket()
    srv.bind(port)
    srv.listen(1)
    first, late, last = (lab.client.socket() for _ in range(3))
    late.bind(late_port)
    first.connect(lab.hosts.server, port, check=False, timeout=5)
    _queued(lab, port, 1)
    rule = lab.faults.hold("client > server", ".", payload=False, port=late_port)
    late.connect(lab.hosts.server, port, check=False, timeout=5)
    last.connect(lab.hosts.server, port, check=False, timeout=5)
    _queued(lab, port, 2)
    return late, rule


@judge("HS-REJECT-OVERFLOW", claims=[85],
       text="a server (here: a listener whose accept queue is full) that rejects a connection answers with RST")
def listener_rejects_with_rst(rec: CaseRecord) -> Verdict:
    out = {}
    for phase, port, listener in (("default", LATE_DEFAULT, PORT), ("abort", LATE_ABORT, PORT + 1)):
        rst = rec.segments(port, src="server", flags="R")
        row = next(iter(rec.snapshot("client", f"{phase}: after the late ACK").find(local_port=port)), None)
        calls = _calls_of_connection(rec, rec.fact("fds")[phase], listener)
        out[phase] = (bool(rst), row.state if row else "gone", ", ".join(f"{c.op}() {c.result()}" for c in calls))
    said = (f"listen(1) with a full accept queue, the final ACK of a waiting request: by default the "
            f"server {'answered RST' if out['default'][0] else 'dropped it silently'} and the client, after "
            f"{out['default'][2]}, stayed {out['default'][1]}; with tcp_abort_on_overflow=1 it "
            f"{'answered RST' if out['abort'][0] else 'sent no RST'}, the client saw {out['abort'][2]} and is "
            f"{out['abort'][1]}")
    return verdict_if(out["default"][0], said,
                      setting="net.ipv4.tcp_abort_on_overflow=1 (the default drops silently)" if out["abort"][0] else None)


def _calls_of_connection(rec, fd, port):
    """The client's connect/recv/send calls on descriptor `fd` from its connect() to `port` until it was
    closed (a descriptor number is reused after close())."""
    out, on = [], False
    for c in rec.calls:
        if c.role != "client" or c.args.get("fd") != fd:
            continue
        if c.op == "connect":
            on = c.args.get("port") == port
        if on and c.op in ("connect", "recv", "send"):
            out.append(c)
        if c.op == "close":
            on = False
    return out


@pytest.mark.claim(listener_rejects_with_rst)
def test_full_listener_rejects_with_rst_only_on_abort_on_overflow(lab, family):
    """Full accept queue, a late final ACK: silently dropped by default, RST with tcp_abort_on_overflow=1."""
    # Each request gets one SYN+ACK retransmission (after 1 s), answered by the ACK the hold let pass,
    # and expires silently; what the client sends after that never leaves its host: a defined ladder.
    lab.set_sysctl("server", "net.ipv4.tcp_synack_retries", 1)
    fds = {}
    for phase, port, late_port in (("default", PORT, LATE_DEFAULT), ("abort", PORT + 1, LATE_ABORT)):
        late, rule = _full_queue_with_a_waiting_request(lab, port, late_port)
        fds[phase] = late.fd
        seen = lab.netstat("server")["TcpExt"].get("ListenOverflows", 0)
        if phase == "abort":
            lab.set_sysctl("server", "net.ipv4.tcp_abort_on_overflow", 1)
        rule.release()
        lab.wait_counter("server", "ListenOverflows", seen + 1, timeout=3, required=False)
        lab.faults.block_output("client", ".", port=late_port)   # its data stays in its host; an RST may leave
        if phase == "abort":
            lab.wait_ss("client", lambda s: not s.find(local_port=late_port), timeout=1, what="the late client reset",
                        required=False)
        late.recv(100, flags=["MSG_DONTWAIT"], check=False)
        late.send("y", flags=["MSG_NOSIGNAL", "MSG_DONTWAIT"], check=False)
        lab.ss(f"{phase}: after the late ACK")
        if phase == "default":                 # the attempt ends here: the RST removes the request it left
            late.setsockopt("SO_LINGER", (1, 0))
            late.close()
    lab.observe("fds", fds)


# -- IO-BEFORE-ACCEPT ---------------------------------------------------------------------------

@judge("IO-BEFORE-ACCEPT", claims=[98], text="only after accept() can client and server send and receive")
def io_before_accept(rec: CaseRecord) -> Verdict:
    accept = rec.call("accept", role="server")
    sent = rec.call("send", role="client")
    acked = [s for s in rec.segments(PORT, src="server") if s.ack is not None and s.ack > 1 and s.t < accept.t0]
    snap = rec.snapshot("server", "before accept()")
    child = next(iter(snap.find(state="ESTAB", local_port=PORT)), None)
    got = rec.call("recv", role="server")
    before = sent.ok and sent.ret and bool(acked)
    return verdict_if(not before, f"with no accept() yet, the client's send() returned {sent.result()} and the server's "
                                  f"kernel acknowledged up to byte {max((s.ack for s in acked), default=1) - 1}; ss showed "
                                  f"the new connection {child.state if child else 'absent'} with Recv-Q "
                                  f"{child.recv_q if child else '-'}; accept() came {accept.t0 - sent.t1:.3f} s later and "
                                  f"recv() returned {got.result()}")


@pytest.mark.claim(io_before_accept)
def test_client_sends_before_accept(lab, family):
    """listen() without accept(); the client connects and sends; later accept() and recv()."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
    cli.send("hello", check=False, timeout=2)
    lab.wait_segment(match("server", ".", ack=6, port=PORT), timeout=1, what="the server's ACK of the data",
                     required=False)
    lab.wait_ss("server", lambda s: any(r.recv_q for r in s.find(state="ESTAB")), timeout=1,
                what="before accept()", required=False)
    conn = srv.accept(timeout=2)
    conn.recv(100, timeout=2, check=False)


# -- BACKLOG-ACCEPTING --------------------------------------------------------------------------

CLIENTS, PAUSED = 20, 5


@judge("BACKLOG-ACCEPTING", claims=[43],
       text="the queue of incoming requests is why a server has a maximum number of connections")
def backlog_is_no_connection_limit(rec: CaseRecord) -> Verdict:
    backlog = rec.call("listen", role="server").args.get("backlog")
    accepted = [c for c in rec.calls_of("accept", role="server") if c.ok]
    served = rec.snapshot("server", "all clients accepted")
    estab = len(served.find(state="ESTAB", local_port=PORT))
    queued, _ = _queue(served)
    drops = rec.counter("server", "all clients accepted", "ListenOverflows")
    paused = rec.snapshot("client", "accept paused")
    later = rec.fact("paused_ports")
    states = [next((r.state for r in paused.find(local_port=p)), "gone") for p in later]
    paused_server = rec.snapshot("server", "accept paused")
    holds = estab <= (backlog or 0) + 1
    return verdict_if(holds, f"listen({backlog}) with accept() called for each client: {len(accepted)} accepted, "
                             f"{estab} ESTAB on the server at once, LISTEN Recv-Q {queued}, ListenOverflows {drops}; "
                             f"with accept() paused, {PAUSED} more clients: "
                             + ", ".join(f"{states.count(st)} {st}" for st in sorted(set(states)))
                             + f" (accept queue {_queue(paused_server)[0]})")


@pytest.mark.claim(backlog_is_no_connection_limit)
def test_backlog_limits_only_connections_not_yet_accepted(lab, family):
    """listen(2) with an accept() per client: 20 clients all served; then accept paused: 5 more clients."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(2)
    for _ in range(CLIENTS):                   # an accept loop: one accept() as each client connects
        lab.client.socket().connect(lab.hosts.server, PORT, check=False, timeout=5)
        srv.accept(timeout=2, check=False)
    lab.netstat("server", label="all clients accepted")
    lab.ss("all clients accepted")

    base = lab.netstat("server")["TcpExt"].get("ListenOverflows", 0)
    ports = []
    for i in range(PAUSED):                    # nobody accepts now
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, PORT, nonblocking=True, check=False)
        ports.append(cli.getsockname()[1])
        # each attempt reaches a defined point before the next: established (the first backlog + 1),
        # or its SYN dropped at the full queue (counted by the kernel)
        if i < 3:
            _queued(lab, PORT, i + 1)
        else:
            lab.wait_counter("server", "ListenOverflows", base + i - 2, required=False)
            lab.faults.block_output("client", "S", port=ports[-1])   # no retransmission: a defined ladder
    lab.observe("paused_ports", ports)
    lab.ss("accept paused")


# -- helpers ------------------------------------------------------------------------------------

OPTION_BYTES = {"nop": 1, "eol": 1, "mss": 4, "wscale": 3, "sackOK": 2, "TS": 10}


def _option_bytes(options) -> int:
    """Bytes the TCP options take in a segment, e.g. 12 for nop,nop,TS."""
    return sum(2 + 8 * len(value) if name == "sack" else OPTION_BYTES[name] for name, value in options)
