"""Experiments that need segments no kernel sends on demand, made by the scripted peer (harness/peer.py).

The peer plays the client host: a SYN without an MSS option (HS-MSS-DEFAULT), an RST while the
server's request is in SYN_RECEIVED (SYNRCVD-RST), one FIN+ACK answering the server's FIN
(CLOSE-3WAY, after a look at what two kernels do on their own).
"""

import os
import sys

import pytest

from harness.judge import judge, verdict_if, Verdict
from harness.peer import PEER_PORT, SCAPY_GROUP
from harness.record import CaseRecord
from harness.segment import match

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


# -- HS-MSS-DEFAULT -----------------------------------------------------------------------------

@judge("HS-MSS-DEFAULT", claims=[18],
       text="for a non-local peer the MSS may be only 536 (read here as: a peer whose SYN carries no MSS option "
            "is sent segments of the default MSS, 536 bytes for IPv4 and 1220 for IPv6, whatever the link MTU; "
            "HS-MSS-ROUTED tests the routed reading)")
def default_mss_without_option(rec: CaseRecord) -> Verdict:
    syn = next(iter(rec.segments(PEER_PORT, src="client", flags="S")), None)
    synack = next(iter(rec.segments(PEER_PORT, src="server", flags="S")), None)
    sizes = [s.len for s in rec.segments(PEER_PORT, src="server", payload=True)]
    row = next(iter(rec.snapshot("server", "after the write").find(state="ESTAB", peer_port=PEER_PORT)), None)
    default = RFC_DEFAULT_MSS[rec.family]
    base = rec.facts.get("tcp_base_mss")
    holds = syn is not None and syn.option("mss") is None and bool(sizes) and max(sizes) <= default
    return verdict_if(holds, f"the peer's SYN carried {'no MSS option' if syn and syn.option('mss') is None else 'an MSS'}"
                             f" over a {rec.mtu}-byte link; the server announced MSS "
                             f"{synack.option('mss') if synack else '-'} itself and cut a {WRITE}-byte write into "
                             f"{len(sizes)} segments of at most {max(sizes, default=0)} bytes (ss mss:"
                             f"{row.info.get('mss') if row else '-'}); the {rec.family} default is {default}"
                             + (f"; tcp_base_mss={base} is the MTU-probing floor, not used here" if base else ""))


@pytest.mark.xdist_group(SCAPY_GROUP)
@pytest.mark.claim(default_mss_without_option)
def test_syn_without_mss_option_gets_default_mss(lab, family):
    """SYN without MSS option: how the server cuts a large write (default MSS or link MSS)."""
    try:
        lab.observe("tcp_base_mss", int(lab.hosts.server.get_sysctl("net.ipv4.tcp_base_mss")))
    except (OSError, ValueError):
        pass                                            # an older kernel without it: the evidence omits it
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    with lab.peer("client") as peer:
        peer.syn(PORT)                                  # no options at all
        peer.expect("server > client  S.  0:0(0) ack 1")
        peer.send(".")
        conn = accepting.wait(timeout=2)
        conn.send(size=WRITE, check=False)
        lab.wait_segment(lambda s: s.src == "server" and s.end == WRITE + 1, timeout=2,
                         what=f"the server's byte {WRITE}", required=False)
        peer.send(".", ack=WRITE + 1)                   # at once: no retransmission timer runs out first
        lab.ss("after the write")


# -- SYNRCVD-RST --------------------------------------------------------------------------------

@judge("SYNRCVD-RST", claims=[29], text="a connection in SYN_RECEIVED that receives an RST returns to LISTEN")
def rst_returns_to_listen(rec: CaseRecord) -> Verdict:
    before = rec.snapshot("server", "the request in SYN-RECV")
    after = rec.snapshot("server", "the request gone")
    had = before.find(state="SYN-RECV", peer_port=PEER_PORT)
    still = after.find(peer_port=PEER_PORT)
    listener = next(iter(after.find(state="LISTEN", local_port=PORT)), None)
    accept = rec.call("accept", role="server")
    first = (accept.ret or {}).get("peer", [None, None])[1] if accept.ok else None
    traced = [h.text() for h in rec.transitions if PEER_PORT in (h.local_port, h.peer_port)]
    holds = (bool(had) and not still and listener is not None and listener.recv_q == 0
             and first == rec.fact("client port"))
    return verdict_if(holds, f"ss showed the request {'in SYN-RECV' if had else 'not at all'} before the RST and "
                             f"{still[0].state if still else 'gone'} after it; the listener stayed "
                             f"{listener.state if listener else 'absent'} with {listener.recv_q if listener else '-'} "
                             f"queued; the blocked accept() returned port {first} first (the next client is "
                             f"{rec.fact('client port')}); the request's transitions: {traced or 'none (never a full socket)'}")


@pytest.mark.xdist_group(SCAPY_GROUP)
@pytest.mark.claim(rst_returns_to_listen)
def test_rst_in_syn_received_leaves_listener_listening(lab, family):
    """RST after the SYN+ACK: what happens to the request, the listener and a blocked accept()."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)                  # a server blocked in accept(), as usual
    with lab.peer("client") as peer:
        peer.syn(PORT, options=[("MSS", lab.mss())])
        peer.expect("server > client  S.  0:0(0) ack 1")
        lab.wait_ss("server", lambda s: s.find(state="SYN-RECV"), timeout=1, what="the request in SYN-RECV",
                    required=False)
        peer.send("R", seq=1)
        lab.wait_ss("server", lambda s: not s.find(state="SYN-RECV"), timeout=1, what="the request gone",
                    required=False)
    # accept() is still blocked unless the reset request reached the queue; the next connection is
    # the first thing it returns if it did not (the queue is a FIFO).
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT, check=False, timeout=5)
    lab.observe("client port", cli.getsockname()[1])
    accepting.wait(timeout=2)


# -- CLOSE-3WAY ---------------------------------------------------------------------------------

AT_ONCE, LATER = PORT, PORT + 1


def _passive_after_fin(rec, port):
    """The segments the passive side sent after the client's FIN on `port`."""
    segs = rec.segments(port)
    fin = next((i for i, s in enumerate(segs) if s.src == "client" and s.has("F")), None)
    return [] if fin is None else [s for s in segs[fin + 1:] if s.src == "server"]


@judge("CLOSE-3WAY", claims=[55, 75], text="the passive closer's ACK and FIN are sent separately in most cases")
def ack_and_fin_apart(rec: CaseRecord) -> Verdict:
    at_once = [s.flags for s in _passive_after_fin(rec, AT_ONCE)]
    later = _passive_after_fin(rec, LATER)
    fin = next(iter(rec.segments(LATER, src="client", flags="F")), None)
    ack = later[0] if later and later[0].flags == "." else None
    delay_ms = (ack.t - fin.t) * 1000 if ack and fin else None
    merged = at_once == ["F."]
    separate = [s.flags for s in later] == [".", "F."]
    setting = (f"a passive application that closes later than its delayed ACK ({delay_ms:.0f} ms after the FIN)"
               if separate and delay_ms is not None else None)
    return verdict_if(not merged and bool(at_once),
                      f"an application that closes at once on EOF answered the FIN with {' then '.join(at_once) or 'nothing'}; "
                      f"one that closes after its delayed ACK sent {' then '.join(s.flags for s in later) or 'nothing'}"
                      + (f", the ACK {delay_ms:.0f} ms after the FIN" if delay_ms is not None else ""),
                      setting=setting)


@pytest.mark.claim(ack_and_fin_apart)
def test_passive_close_on_eof_merges_ack_and_fin(lab, family):
    """Passive side closes right at EOF, or only after its delayed ACK: what it sends after the FIN."""
    # "At once" must not depend on the machine's load: the server wakes under a real-time policy, so its
    # close() comes within microseconds of the FIN, not after the delayed-ACK timer (40 ms).
    lab.command("server", ["chrt", "--fifo", "10", sys.executable, "-S", "-c", CLOSE_ON_EOF, family,
                           lab.addr("server"), AT_ONCE])
    lab.wait_ss("server", lambda s: s.find(state="LISTEN", local_port=AT_ONCE), what="the close-on-EOF server")
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, AT_ONCE, check=False, timeout=5)
    cli.send("hello", check=False)                      # data arms the server's delayed ACK (40 ms)
    lab.wait_segment(lambda s: s.src == "server" and s.sport == AT_ONCE and s.ack == 6, timeout=2,
                     what="the ACK of the data", required=False)
    cli.close()
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT", peer_port=AT_ONCE), timeout=2,
                what="the client's TIME-WAIT (close at once)", required=False)

    srv = lab.server.socket()
    srv.bind(LATER)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli2 = lab.client.socket()
    cli2.connect(lab.hosts.server, LATER, check=False, timeout=5)
    conn = accepting.wait(timeout=2)
    cli2.send("hello", check=False)
    conn.recv(100, timeout=2, check=False)
    cli2.close()
    conn.recv(100, timeout=2, check=False)              # EOF
    lab.wait_segment(lambda s: s.src == "server" and s.sport == LATER and s.ack == 7 and not s.has("F"), timeout=1,
                     what="the delayed ACK of the FIN", required=False)
    # ... and taken by the client: a pure ACK sent from the timer's CPU can reach the client after a
    # FIN sent at once from another CPU (veth queues per CPU), and then its timewait socket answers
    # that old ACK, which the closed server resets (seen once in ~10 catalogues with 10 workers).
    lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-2", peer_port=LATER), timeout=1,
                what="the client in FIN-WAIT-2", required=False, keep=False)
    conn.close()                                        # only once the delayed ACK is on the wire and taken
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT", peer_port=LATER), timeout=2,
                what="the client's TIME-WAIT (close later)", required=False)


@judge("CLOSE-3WAY", claims=[70],
       text="FIN_WAIT_1 receiving FIN and ACK in one segment goes straight to TIME_WAIT, without FIN_WAIT_2")
def fin_ack_to_time_wait(rec: CaseRecord) -> Verdict:
    waiting = rec.snapshot("server", "the server's FIN not yet acknowledged").find(local_port=PORT, peer_port=PEER_PORT)
    done = rec.snapshot("server", "the server's TIME-WAIT").find(local_port=PORT, peer_port=PEER_PORT)
    seen = sorted({r.state for snap in rec.snapshots("server") for r in snap.find(peer_port=PEER_PORT)})
    peer = [s for s in rec.segments(PEER_PORT, src="client") if s.has("F")]
    hist = next((h for h in rec.transitions if h.local_role == "server" and h.peer_port == PEER_PORT), None)
    fw2 = None
    if hist and "FIN_WAIT2" in hist.states[1:-1]:
        i = hist.states.index("FIN_WAIT2")
        fw2 = (hist.times[i] - hist.times[i - 1]) * 1e6
    before = waiting[0].state if waiting else "nothing"
    after = done[0].state if done else "nothing"
    holds = (before == "FIN-WAIT-1" and after == "TIME-WAIT" and len(peer) == 1 and peer[0].flags == "F."
             and peer[0].ack == 2 and "FIN-WAIT-2" not in seen)
    return verdict_if(holds, f"from outside: ss showed the server {before} with its FIN unacknowledged, the peer sent "
                             f"{' and '.join(s.text for s in peer) or 'no FIN'}, and ss then showed {after}; the "
                             f"connection's states in ss were {seen}. Inside the kernel the trace went "
                             f"{hist.text() if hist else '(not traced)'}"
                             + (f": a FIN_WAIT2 of {fw2:.0f} us while that one segment was processed (its ACK before "
                                f"its FIN, as RFC 793/9293 order it), then the timewait socket" if fw2 is not None else ""))


@pytest.mark.xdist_group(SCAPY_GROUP)
@pytest.mark.claim(fin_ack_to_time_wait)
def test_fin_wait_1_takes_fin_ack_to_time_wait(lab, family):
    """The server closes first; one FIN+ACK from the peer acks its FIN: the server's states before and after."""
    # The server's FIN waits unacknowledged while ss looks; a retransmission (RTO >= 200 ms) could come
    # between it and the peer's FIN+ACK, so the minimum RTO is raised to 1 s where the kernel has the
    # setting (a retransmitted FIN changes no state, and the judge counts the peer's segments only).
    if os.path.exists("/proc/sys/net/ipv4/tcp_rto_min_us"):
        lab.set_sysctl("server", "net.ipv4.tcp_rto_min_us", 1000000)
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    with lab.peer("client") as peer:
        peer.syn(PORT, options=[("MSS", lab.mss())])
        peer.expect("server > client  S.  0:0(0) ack 1")
        peer.send(".")
        conn = accepting.wait(timeout=2)
        conn.close()
        peer.expect("server > client  F.  1:1(0) ack 1")
        lab.ss("the server's FIN not yet acknowledged")
        peer.send("F.")                                 # seq 1, ack 2: acks the FIN and carries the peer's own
        lab.wait_segment(match("server", ".", ack=2, port=PEER_PORT), timeout=1, what="the server's ACK of the FIN",
                         required=False)
        lab.wait_ss("server", lambda s: s.find(state="TIME-WAIT"), timeout=1, what="the server's TIME-WAIT",
                    required=False)
