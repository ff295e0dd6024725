"""Every TCP state reached in one lab, and how each one was seen: in `ss`, in the kernel's trace, or both.

Which source can show which state follows from the kernel (harness/trace.py, TIMEWAIT_NOTE): ss never
lists a CLOSED socket, and TIME_WAIT is never a traced new state (the timewait socket that replaces a
closing socket is not traced). States that last microseconds are seen in ss only while the case
holds the segment that would end them, so every such state below is held with a fault first. Each
hold ends at a defined point, so that a run observes the same segments as the next: a drop rule
drops exactly one copy (count=1) and the next copy is the sender's own retransmission, or a sender's
segments wait in its neighbour queue (lab.faults.delay), where the kernel does not retransmit them.
"""

import pytest

from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord

PORT = 50000
# Every hold below ends before the held sender's next retransmission: with a retransmission timeout of
# at least 1 s (SYN and SYN+ACK start at 1 s anyway), a hold that ss ends within a second drops exactly
# one copy, so every run records the same segments. The FIN's retransmission then passes about 1 s
# after the FIN. (6.1 has no tcp_rto_min_us: there its FIN comes again after 200 ms.)
HOLD_RTO_US = 1_000_000

# The state as the articles name it, as ss prints it (None: ss cannot show it), as the kernel names it.
STATES = (
    ("CLOSED", None, "CLOSE"),
    ("LISTEN", "LISTEN", "LISTEN"),
    ("SYN_SENT", "SYN-SENT", "SYN_SENT"),
    ("SYN_RECEIVED", "SYN-RECV", "SYN_RECV"),
    ("ESTABLISHED", "ESTAB", "ESTABLISHED"),
    ("FIN_WAIT_1", "FIN-WAIT-1", "FIN_WAIT1"),
    ("FIN_WAIT_2", "FIN-WAIT-2", "FIN_WAIT2"),
    ("CLOSE_WAIT", "CLOSE-WAIT", "CLOSE_WAIT"),
    ("CLOSING", "CLOSING", "CLOSING"),
    ("LAST_ACK", "LAST-ACK", "LAST_ACK"),
    ("TIME_WAIT", "TIME-WAIT", "TIME_WAIT"),
)


@pytest.fixture
def lab_sysctls(lab_sysctls):
    """Name: lab_sysctls. Scope: function. The run's settings plus the retransmission timer of the CLOSING hold."""
    return {**lab_sysctls, "net.ipv4.tcp_rto_min_us": HOLD_RTO_US}


def _port_state(port, state):
    """A predicate for lab.wait_ss: a socket with local or peer `port` in `state` (ss spelling)."""
    return lambda s: s.find(local_port=port, state=state) or s.find(peer_port=port, state=state)


def _seen_in_ss(rec: CaseRecord, label):
    """The first snapshot row in `label`, as 'ss LABEL [checkpoint] role port>peer-port', or None."""
    for snap in rec.ss:
        for row in snap.rows:
            if row.state == label:
                return f"ss {label} [{snap.label}] {snap.role} {row.local_port}>{row.peer_port or '*'}"
    return None


def _seen_in_trace(rec: CaseRecord, kernel_name):
    """The first transition into `kernel_name`, as 'trace OLD -> NEW role port>peer-port', or None.
    A state a history only starts from does not count: CLOSED is reached when a socket enters CLOSE."""
    entered = [(t, old, new, h) for h in rec.histories() for old, new, t in zip(h.states, h.states[1:], h.times)
               if new == kernel_name]
    if not entered:
        return None
    t, old, new, h = min(entered, key=lambda e: e[0])
    return f"trace {old} -> {new} {h.local_role} {h.local_port}>{h.peer_port}"


def states_table(rec: CaseRecord) -> list:
    """For each of the eleven states: how this case saw it ('ss', 'trace', 'ss+trace' or None) and where."""
    table = []
    for name, label, kernel_name in STATES:
        ss_how = _seen_in_ss(rec, label) if label else None
        trace_how = _seen_in_trace(rec, kernel_name)
        seen_by = "+".join(source for source, how in (("ss", ss_how), ("trace", trace_how)) if how) or None
        table.append({"state": name, "seen_by": seen_by, "how": "; ".join(h for h in (ss_how, trace_how) if h)})
    return table


@judge("ALL-STATES", claims=[],
       text="a TCP connection has eleven states, and each of them can be reached and observed")
def every_state_reached(rec: CaseRecord) -> Verdict:
    table = states_table(rec)
    seen = [row for row in table if row["seen_by"]]
    return verdict_if(len(seen) == len(table),
                      f"{len(seen)} of {len(table)} states observed: "
                      + "; ".join(f"{row['state']} by {row['seen_by'] or 'nothing'}" + (f" ({row['how']})" if row['how']
                                                                                        else "") for row in table))


@judge("ALL-STATES", claims=[11], text="CLOSED is no connection state: a closed socket has no entry at all")
def closed_has_no_entry(rec: CaseRecord) -> Verdict:
    entered = _seen_in_trace(rec, "CLOSE")
    listed = sorted({row.state for snap in rec.ss for row in snap.rows if row.state in ("UNCONN", "CLOSE", "CLOSED")})
    return verdict_if(entered is not None and not listed,
                      f"sockets entered CLOSE in the trace ({entered or 'never'}); ss listed "
                      f"{', '.join(listed) or 'no closed socket'} in {len(rec.ss)} snapshots")


@pytest.mark.claim(every_state_reached)
@pytest.mark.claim(closed_has_no_entry)
def test_every_state_is_reached_and_observed(lab, family):
    """One lab drives sockets through all eleven states, holding segments so that ss can see the short ones."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.ss("listening")                                              # LISTEN

    def seen(role, port, state, what):
        lab.wait_ss(role, _port_state(port, state), what=what, timeout=3, required=False)

    # SYN_SENT: the client's SYNs are held until the socket is closed (SYN_SENT -> CLOSE).
    held = lab.faults.hold("client > server", "S")
    trying = lab.client.socket()
    trying.connect(lab.hosts.server, PORT, nonblocking=True, check=False)
    trying_port = trying.getsockname()[1]
    seen("client", trying_port, "SYN-SENT", "SYN-SENT while its SYN is held")
    trying.close()
    held.release()

    # SYN_RECEIVED: the client's bare ACKs are held, the server's request shows as SYN-RECV; once
    # released, the client's first data carries the ACK and the connection is ESTABLISHED on both sides.
    held = lab.faults.hold("client > server", ".", payload=False)
    closer = lab.client.socket()
    closer.connect(lab.hosts.server, PORT, check=False, timeout=5)
    closer_port = closer.getsockname()[1]
    seen("server", closer_port, "SYN-RECV", "SYN-RECV while the final ACK is held")
    held.release()
    closer.send("x", check=False)
    closer_peer = srv.accept(timeout=5)
    closer_peer.recv(10, timeout=2, check=False)                     # nothing unread: close() sends FIN, not RST
    lab.ss("established")

    # CLOSE_WAIT and LAST_ACK on the server, FIN_WAIT_2 and TIME_WAIT on the client: the client
    # closes first; the server's FIN waits in the server's neighbour queue until ss shows LAST-ACK.
    passive = lab.client.socket()
    passive.connect(lab.hosts.server, PORT, check=False, timeout=5)
    passive_port = passive.getsockname()[1]
    passive_peer = srv.accept(timeout=5)
    passive.close()
    seen("server", passive_port, "CLOSE-WAIT", "CLOSE-WAIT after the client's FIN")
    seen("client", passive_port, "FIN-WAIT-2", "FIN-WAIT-2 (orphan)")
    with lab.faults.delay("server"):
        passive_peer.close()
        seen("server", passive_port, "LAST-ACK", "LAST-ACK while its FIN is held")
    seen("client", passive_port, "TIME-WAIT", "TIME-WAIT after the server's FIN")
    lab.wait_ss("server", lambda s: not s.find(peer_port=passive_port), what="LAST_ACK closed", timeout=3,
                required=False)

    # FIN_WAIT_1 and CLOSING on the client: its FIN is held, so the server's FIN arrives first; the
    # server's FIN-WAIT-2 lasts until the hold is released and the FIN's retransmission passes.
    held = lab.faults.hold("client > server", "F.")
    closer.close()
    seen("client", closer_port, "FIN-WAIT-1", "FIN-WAIT-1 while its FIN is held")
    closer_peer.close()
    seen("client", closer_port, "CLOSING", "CLOSING: the server's FIN came first")
    seen("server", closer_port, "FIN-WAIT-2", "FIN-WAIT-2 (server)")
    held.release()
    seen("client", closer_port, "TIME-WAIT", "TIME-WAIT (after CLOSING)")
    seen("server", closer_port, "TIME-WAIT", "TIME-WAIT (server)")
