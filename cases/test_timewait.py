"""Reusing ports and socket pairs within 2MSL: a restarted server's bind(), a client reconnecting from
the same port, a SYN that meets a TIME-WAIT socket, and whether a restarted server waits out a
"quiet time" before its next connection (article 000)."""

import pytest

from harness.errors import SocklabError
from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord, Unobservable

PORT = 50000
CLIENT_PORT = 50100          # in the cases' reserved range: never an ephemeral port


def reuse_set(rec: CaseRecord, call) -> bool:
    """Whether SO_REUSEADDR was set on the descriptor of `call` (a bind) since its socket() call."""
    fd = call.args.get("fd")
    born = max((c.t0 for c in rec.calls_of("socket", program=call.program) if c.ret == fd and c.t0 <= call.t0),
               default=0.0)
    return any(c.program == call.program and c.args.get("fd") == fd and c.args.get("name") == "SO_REUSEADDR"
               and c.args.get("value") and born <= c.t0 <= call.t0 for c in rec.calls_of("setsockopt"))


def connection(lab, port: int, *, client_port: int | None = None, server_reuse: bool = False,
               client_reuse: bool = False, server=None, server_closes_first: bool = False):
    """A connection to `port` (from `client_port`), closed by both sides, the client first unless
    `server_closes_first`; returns the server's listening socket."""
    prog = server or lab.server
    srv = prog.socket()
    if server_reuse:
        srv.setsockopt("SO_REUSEADDR", 1)
    srv.bind(port)
    srv.listen(16)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    if client_reuse:
        cli.setsockopt("SO_REUSEADDR", 1)
    if client_port:
        cli.bind(client_port)
    cli.connect(lab.hosts.server, port)
    conn = accepting.wait()
    first, second = (conn, cli) if server_closes_first else (cli, conn)
    roles = ("server", "client") if server_closes_first else ("client", "server")
    t = first.close().t0
    # The peer's ACK of that FIN; closing before it leaves would let it cross the second FIN.
    lab.next_segment(roles[1], t, f"the {roles[1]}'s ACK of the {roles[0]}'s FIN", port=port)
    second.recv(100, timeout=2, check=False)
    t = second.close().t0
    lab.next_segment(roles[0], t, f"the {roles[0]}'s answer to the {roles[1]}'s FIN", port=port)
    return srv


# -- TIMEWAIT-REBIND ----------------------------------------------------------------------------

@judge("TIMEWAIT-REBIND", claims=[33],
       text="a server restarted within 2MSL cannot bind its port again ('address already in use')")
def restart_cannot_bind(rec: CaseRecord) -> Verdict:
    binds = {(c.args.get("port"), reuse_set(rec, c)): c for c in rec.calls_of("bind", program="restarted")}
    held = rec.snapshot("server", "only the old server's TIME-WAITs")
    tw = sorted(r.local_port for r in held.rows if r.state == "TIME-WAIT")
    refused = [k for k, c in binds.items() if c.errno == "EADDRINUSE"]
    both_reuse = binds.get((PORT + 1, True))
    text = ("with the old server's TIME-WAIT on ports " + ", ".join(map(str, tw)) + ", bind() by the restarted "
            "server gave: " + "; ".join(f"port {p} {'with' if r else 'without'} SO_REUSEADDR: {c.result()}"
                                        for (p, r), c in sorted(binds.items())))
    if not binds:
        return verdict_if(False, "the restarted server made no bind() call")
    if len(refused) == len(binds):
        return verdict_if(True, text)
    if both_reuse is not None and both_reuse.ok and len(refused) == len(binds) - 1:
        return verdict_if(False, text, setting="unless both the old and the new server set SO_REUSEADDR")
    return verdict_if(False, text)


@pytest.mark.claim(restart_cannot_bind)
def test_restarted_server_binds_over_time_wait(lab, family):
    """The old server (50000 plain, 50001 SO_REUSEADDR) closes first and exits; a new one bind()s both ports."""
    ports = {PORT: False, PORT + 1: True}          # port -> did the old server set SO_REUSEADDR?
    for port, reuse in ports.items():
        connection(lab, port, server_reuse=reuse, server_closes_first=True)
    lab.server.exit(0)                             # the old server is gone; only its TIME-WAITs hold the ports
    lab.wait_ss("server", lambda s: s.states() == ["TIME-WAIT"] * 2, timeout=2, required=False,
                what="only the old server's TIME-WAITs")

    new = lab.program("server", "restarted")
    served = []
    for port in ports:
        for reuse in (False, True):
            sock = new.socket()
            if reuse:
                sock.setsockopt("SO_REUSEADDR", 1)
            if sock.bind(port, check=False).ok:
                sock.listen(16)
                accepting = sock.accept(wait=False)
                client = lab.client.socket()
                client.connect(lab.hosts.server, port, check=False, timeout=5)
                served.append((accepting.wait(timeout=5), client.getsockname()[1]))
    lab.ss("restarted server next to the TIME-WAITs")
    # The new server's connection ends here, not when the case's programs are stopped (its FIN and
    # the client's ACK would then race the end of the capture).
    for conn, client_port in served:
        since = conn.close().t0
        lab.next_segment("client", since, "the client's ACK of the restarted server's FIN", port=client_port)


# -- TIMEWAIT-4TUPLE ----------------------------------------------------------------------------

EPHEMERAL = 51500           # the client namespace's only ephemeral port in the second part


def attempts(rec: CaseRecord, client_port: int) -> list[str]:
    """What each client socket that bound `client_port` got, in order: its bind()'s errno, or its
    connect()'s result ('0' when the pair was used)."""
    out = []
    for b in rec.calls_of("bind", program="client"):
        if b.args.get("port") != client_port:
            continue
        if not b.ok:
            out.append(f"bind() {b.result()}")
            continue
        c = next((c for c in rec.calls_of("connect", program="client")
                  if c.args.get("fd") == b.args.get("fd") and c.t0 > b.t0), None)
        out.append(c.result() if c else "no connect()")
    return out


def ephemeral_connects(rec: CaseRecord) -> list[str]:
    """connect() results of the sockets that did not bind (the kernel chose the port)."""
    bound = {(b.args.get("fd"), b.t0) for b in rec.calls_of("bind", program="client")}
    out = []
    for c in rec.calls_of("connect", program="client"):
        born = max((s.t0 for s in rec.calls_of("socket", program="client") if s.ret == c.args.get("fd")
                    and s.t0 <= c.t0), default=0.0)
        if not any(fd == c.args.get("fd") and born <= t <= c.t0 for fd, t in bound):
            out.append(c.result())
    return out


@judge("TIMEWAIT-4TUPLE", claims=[34],
       text="within 2MSL the same socket pair (both IP addresses and ports) cannot be used again")
def pair_not_reused(rec: CaseRecord) -> Verdict:
    bound = attempts(rec, CLIENT_PORT)                # first connection, without SO_REUSEADDR, with it
    ephemeral = ephemeral_connects(rec)               # first connection, default tcp_tw_reuse, tcp_tw_reuse=1
    server_side = attempts(rec, CLIENT_PORT + 1)      # first connection, the SYN to the server's TIME-WAIT
    if len(bound) < 3 or len(ephemeral) < 3 or len(server_side) < 2:
        raise Unobservable(f"the case made {len(bound)}, {len(ephemeral)} and {len(server_side)} attempts, "
                           f"not 3, 3 and 2")
    reconnect = [c for c in rec.calls_of("connect", program="client") if c.args.get("port") == PORT + 1][-1]
    syn_answer = next((s for s in rec.segments(PORT + 1, src="server") if s.t >= reconnect.t0), None)
    text = (f"the client's TIME-WAIT pair, port bound by the client: a new socket without SO_REUSEADDR got {bound[1]}, "
            f"connect() {bound[2]} with it; port chosen by the kernel: connect() {ephemeral[1]} by default, "
            f"{ephemeral[2]} with tcp_tw_reuse=1; a SYN from the same pair to the server's TIME-WAIT: connect() "
            f"{server_side[1]}, answered {syn_answer.flags if syn_answer else 'by nothing'}")
    if bound[2] == "0" or ephemeral[1] == "0" or server_side[1] == "0":
        return verdict_if(False, text)
    if ephemeral[2] == "0":
        return verdict_if(False, text, setting="net.ipv4.tcp_tw_reuse other than 1 (the default)")
    return verdict_if(True, text)


def shorten_tw_reuse_delay(lab) -> None:
    """tcp_tw_reuse lets a pair be reused only a while after the TIME-WAIT's last timestamp (1 s): shorten
    that per namespace where the kernel has the setting, else wait it out as part of the experiment."""
    try:
        lab.set_sysctl("client", "net.ipv4.tcp_tw_reuse_delay", 1)
    except (SocklabError, OSError):
        lab.hold(1.1, "tcp_tw_reuse reuses a TIME-WAIT pair only 1 s after its last timestamp")


def client_time_wait(lab, port: int):
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT", local_port=port), timeout=3, required=False,
                what=f"the client's TIME-WAIT on port {port}")


@pytest.mark.claim(pair_not_reused)
def test_same_socket_pair_within_2msl(lab, family):
    """The client closes first and connects again on the same pair: from a port it binds, from the one
    port the kernel may choose (default and tcp_tw_reuse=1); then the server closes first and the
    client's next SYN from the same pair meets the server's TIME-WAIT."""
    connection(lab, PORT, client_port=CLIENT_PORT, client_reuse=True)
    client_time_wait(lab, CLIENT_PORT)
    lab.client.socket().bind(CLIENT_PORT, check=False)              # without SO_REUSEADDR
    again = lab.client.socket()
    again.setsockopt("SO_REUSEADDR", 1)
    if again.bind(CLIENT_PORT, check=False).ok:
        again.connect(lab.hosts.server, PORT, check=False, timeout=5)

    lab.set_sysctl("client", "net.ipv4.ip_local_port_range", f"{EPHEMERAL} {EPHEMERAL}")
    connection(lab, PORT + 2)
    client_time_wait(lab, EPHEMERAL)
    lab.client.socket().connect(lab.hosts.server, PORT + 2, check=False, timeout=5)   # default tcp_tw_reuse
    lab.set_sysctl("client", "net.ipv4.tcp_tw_reuse", 1)
    shorten_tw_reuse_delay(lab)
    lab.client.socket().connect(lab.hosts.server, PORT + 2, check=False, timeout=5)

    srv = connection(lab, PORT + 1, client_port=CLIENT_PORT + 1, server_closes_first=True)
    lab.wait_ss("server", lambda s: s.find(state="TIME-WAIT", local_port=PORT + 1), timeout=3, required=False,
                what="the server's TIME-WAIT")
    accepting = srv.accept(wait=False)
    back = lab.client.socket()
    back.bind(CLIENT_PORT + 1, check=False)
    call = back.connect(lab.hosts.server, PORT + 1, check=False, timeout=5)
    if call.ok:
        accepting.wait(timeout=5)
    lab.next_segment("server", call.t0, "the server's answer to the SYN that met its TIME-WAIT", port=PORT + 1)
    lab.ss("after the reconnects")


# -- QUIET-TIME --------------------------------------------------------------------------------

@judge("QUIET-TIME", claims=[35],
       text="a restarted server still waits 2MSL (a 'quiet time') before its next connection")
def restarted_server_waits(rec: CaseRecord) -> Verdict:
    listen = rec.call("listen", program="restarted")
    accepted = rec.calls_of("accept", program="restarted")
    snap = rec.snapshot("server", "restarted server next to the TIME-WAIT")
    tw = [r for r in snap.rows if r.state == "TIME-WAIT" and r.timer is not None]
    tw_end = snap.t + tw[0].timer.remaining if tw else None
    got = accepted[-1] if accepted else None
    waited = got.t1 - listen.t0 if got is not None and got.ok else None
    holds = waited is not None and tw_end is not None and got.t1 >= tw_end - 1.0
    return verdict_if(holds, f"the restarted server's accept() returned "
                             f"{f'{waited * 1000:.1f} ms' if waited is not None else 'nothing'} after its listen(), "
                             f"while the old connection's TIME-WAIT still had "
                             f"{f'{tw[0].timer.remaining:g} s' if tw else 'no entry'} to run")


@pytest.mark.claim(restarted_server_waits)
def test_restarted_server_accepts_at_once(lab, family):
    """The server closes first, exits and restarts with SO_REUSEADDR inside 2MSL; a client connects at once."""
    connection(lab, PORT, server_reuse=True, server_closes_first=True)
    lab.server.exit(0)
    lab.wait_ss("server", lambda s: s.states() == ["TIME-WAIT"], timeout=2, required=False,
                what="only the old server's TIME-WAIT")
    new = lab.program("server", "restarted")
    srv = new.socket()
    srv.setsockopt("SO_REUSEADDR", 1)
    srv.bind(PORT)
    srv.listen(16)
    accepting = srv.accept(wait=False)
    lab.client.socket().connect(lab.hosts.server, PORT, check=False, timeout=5)
    accepting.wait(timeout=5)
    lab.ss("restarted server next to the TIME-WAIT")
