"""TCP server design (article 000, section 6): concurrency and telling sessions apart.

"TCP servers need to establish a separate process (or thread) for each connection" (ONE-PROCESS: a
single-threaded poll server, cases/programs/poll_server.py, serves two clients with interleaved
requests) and "depending on the IP and port number of the source host, the server can easily
distinguish between different sessions" (DEMUX-4TUPLE: three clients, two ports on one address and
one on a second address, plus a crafted segment that belongs to no session). DEMUX-4TUPLE runs in
the routed topology: the router's address on the server's link is the second client address.
"""

import os
import sys

import pytest

from harness.peer import SCAPY_GROUP
from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord
from harness.topology import Routed

PORT = 50000
POLL_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "poll_server.py")


def _process(pid: int) -> dict:
    """A process as /proc shows it: threads, child processes, socket descriptors."""
    with open(f"/proc/{pid}/status") as fh:
        threads = next(int(l.split()[1]) for l in fh if l.startswith("Threads:"))
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            children += fh.read().split()
    sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return {"pid": pid, "threads": threads, "children": len(children), "sockets": sockets}


# -- ONE-PROCESS ----------------------------------------------------------------------------------

@judge("ONE-PROCESS", claims=[42],
       text="a TCP server needs a separate process or thread for each connection")
def process_per_connection(rec: CaseRecord) -> Verdict:
    proc = rec.fact("server process")
    sent = {}
    for c in rec.calls_of("send", role="client"):
        sent.setdefault(c.args.get("fd"), []).append((c.args.get("data") or "").strip())
    replies = {}
    for c in rec.calls_of("recv", role="client"):
        replies.setdefault(c.args.get("fd"), []).append(c.ret if c.ok else c.result())
    answered, servers = 0, set()
    for fd, requests in sent.items():
        for req, rep in zip(requests, replies.get(fd, [])):
            if isinstance(rep, str) and rep.startswith(f"{req} served by "):
                answered += 1
                servers.add(rep.split(" served by ", 1)[1].strip())
    total = sum(len(r) for r in sent.values())
    both_open = len(rec.snapshot("server", "both connections open").find(state="ESTAB", local_port=PORT))
    one_thread = (answered == total and total > 0 and len(servers) == 1 and proc["threads"] == 1
                  and proc["children"] == 0 and both_open == 2)
    return verdict_if(not one_thread,
                      f"one server process ({proc['threads']} thread(s), {proc['children']} child process(es), "
                      f"{proc['sockets']} sockets) with {both_open} connections open at once answered {answered} of "
                      f"{total} interleaved requests of {len(sent)} clients; the answers name {len(servers)} "
                      f"process/thread pair(s)")


@pytest.mark.claim(process_per_connection)
def test_one_thread_serves_two_connections(lab, family):
    """A single-threaded poll() server; clients A and B connected at once send A1, B1, A2, B2 and each
    reads its own answers."""
    server = lab.command("server", [sys.executable, "-S", POLL_SERVER, family, lab.addr("server"), PORT],
                         name="poll_server")
    lab.wait_ss("server", lambda s: s.find(state="LISTEN", local_port=PORT), timeout=10, what="the poll server listening")
    a, b = lab.client.socket(), lab.client.socket()
    a.connect(lab.hosts.server, PORT)
    b.connect(lab.hosts.server, PORT)
    # Both connections established and taken from the accept queue by the poll server (LISTEN Recv-Q 0),
    # so the snapshot does not depend on how far its loop has got.
    lab.wait_ss("server", lambda s: len(s.find(state="ESTAB", local_port=PORT)) == 2
                and all(r.recv_q == 0 for r in s.find(state="LISTEN", local_port=PORT)), timeout=5, required=False,
                what="both connections open")
    lab.observe("server process", _process(server.pid))
    for n in (1, 2):
        a.send(f"A{n}\n")
        b.send(f"B{n}\n")
        lab.read(b, 200)
        lab.read(a, 200)
    # The clients' (delayed) ACKs of the last answers, so every run's record ends at the same segment.
    for sock in (a, b):
        port = sock.getsockname()[1]
        data = [seg for seg in lab.segments(PORT) if seg.src == "server" and seg.dport == port and seg.length]
        if data:
            end, since = data[-1].seq + data[-1].length, data[-1].time
            lab.wait_segment(lambda seg, p=port, e=end, t=since: seg.src == "client" and seg.sport == p
                             and seg.ack is not None and seg.ack >= e and seg.time >= t,
                             timeout=2, what=f"the client's ACK of the last answer on port {port}", required=False)
    lab.ss("after the requests")


# -- DEMUX-4TUPLE ---------------------------------------------------------------------------------

@judge("DEMUX-4TUPLE", claims=[44],
       text="the server tells sessions apart by the source IP address and port: each connection's bytes reach "
            "only its own socket, and a segment that belongs to no session is refused")
def sessions_by_address_and_port(rec: CaseRecord) -> Verdict:
    names, payloads = {}, {}
    for c in rec.calls_of("getsockname"):
        if c.ok and c.role != "server":
            names[tuple(c.ret)] = (c.program, c.args.get("fd"))
    for c in rec.calls_of("send"):
        if c.role != "server":
            payloads[(c.program, c.args.get("fd"))] = c.args.get("data")
    read = {}
    for c in rec.calls_of("recv", role="server"):
        read.setdefault(c.args.get("fd"), c.ret if c.ok else c.result())
    pairs = []
    for c in rec.calls_of("accept", role="server"):
        if c.ok:
            peer = tuple(c.ret["peer"])
            pairs.append((peer, payloads.get(names.get(peer)), read.get(c.ret["fd"])))
    right = [p for p in pairs if p[1] is not None and p[1] == p[2]]
    tuples = {p[0] for p in pairs}
    rows = rec.snapshot("server", "three connections").find(state="ESTAB", local_port=PORT)
    stray = rec.fact("stray port")
    refused = [s.flags for s in rec.segments(stray, src="server")]
    stray_read = [c for c in rec.calls_of("recv", role="server") if c.ok and "stray" in str(c.ret)]
    holds = (len(pairs) == 3 and len(right) == 3 and len(tuples) == 3 and any("R" in f for f in refused)
             and not stray_read)
    return verdict_if(holds, f"{len(rows)} ESTAB rows on port {PORT}; {len(right)} of {len(pairs)} accepted sockets "
                             f"read exactly the bytes of the client at their peer address and port ("
                             + "; ".join(f"{a}:{p} -> {got!r}" for (a, p), _, got in pairs)
                             + f"); a segment from port {stray} that belongs to no session was answered with "
                               f"{' '.join(refused) or 'nothing'} and read by {len(stray_read)} socket(s)")


@pytest.mark.xdist_group(SCAPY_GROUP)
@pytest.mark.claim(sessions_by_address_and_port)
@pytest.mark.parametrize("lab_topology", [Routed(capture="server")], ids=["routed"])
def test_sessions_told_apart_by_address_and_port(lab, family):
    """Three clients: ports 50100 and 50101 on the client's address, port 50100 on the router's address;
    each sends its own payload; then a data segment from a port with no connection."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(8)
    router = lab.program("router", "router")
    router_addr = lab.topology.links["server"][0].addr(family)      # the router's end of the server's link
    clients = [(lab.client.socket(), 50100, None), (lab.client.socket(), 50101, None),
               (router.socket(), 50100, router_addr)]
    for sock, port, addr in clients:
        sock.bind(port, addr)
        sock.connect(lab.hosts.server, PORT)
    conns = [srv.accept() for _ in clients]
    for sock, _, _ in clients:
        addr, port = sock.getsockname()
        sock.send(f"payload of {sock.program.name} port {port}")
    for conn in conns:
        lab.read(conn, 100)
    lab.ss("three connections")
    with lab.peer("client") as peer:
        lab.observe("stray port", peer.sport)
        peer.dport, peer.kernel_isn = PORT, 0
        peer.send("P.", seq=1, ack=1, payload=b"stray data")
        lab.wait_segment(lambda s: s.src == "server" and s.dport == peer.sport, timeout=5, required=False,
                         what="the server's answer to the stray segment")
    for conn in conns:
        conn.recv(100, flags=["MSG_DONTWAIT"], check=False)
