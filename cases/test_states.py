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

PORT = 50000
# The one retransmission the case waits for (the client's FIN, dropped once to reach CLOSING) comes
# ~tcp_rto_min after the FIN: ss has seen FIN-WAIT-1, CLOSING and FIN-WAIT-2 some 10 ms after it, so
# 100 ms leaves room for a loaded machine while keeping the case short.
HOLD_RTO_US = 100_000

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


def _role(lab, address: str) -> str:
    for role, host in lab.topology.hosts.items():
        if address in (host.ipv4, host.ipv6):
            return role
    return address


def _seen_in_ss(lab, label):
    """The first snapshot row in `label`, as 'ss LABEL [checkpoint] role port>peer-port', or None."""
    for snap in lab.snapshots:
        for row in snap.rows:
            if row.state == label:
                return f"ss {label} [{snap.label}] {snap.role} {row.local_port}>{row.peer_port or '*'}"
    return None


def _seen_in_trace(lab, kernel_name, histories):
    """The first transition into `kernel_name`, as 'trace OLD -> NEW role port>peer-port', or None."""
    entered = [t for hist in histories for t in hist.transitions if t.new == kernel_name]
    if not entered:
        return None
    t = min(entered, key=lambda t: t.time)
    return f"trace {t.old} -> {t.new} {_role(lab, t.local)} {t.local_port}>{t.peer_port}"


def states_table(lab) -> list:
    """For each of the eleven states: how this lab saw it ('ss', 'trace', 'ss+trace' or None) and where."""
    histories = lab.transitions()
    table = []
    for name, label, kernel_name in STATES:
        ss_how = _seen_in_ss(lab, label) if label else None
        trace_how = _seen_in_trace(lab, kernel_name, histories)
        seen_by = "+".join(source for source, how in (("ss", ss_how), ("trace", trace_how)) if how) or None
        table.append({"state": name, "seen_by": seen_by, "how": "; ".join(h for h in (ss_how, trace_how) if h)})
    return table


@pytest.mark.article("000")
@pytest.mark.article("002")
@pytest.mark.experiment("ALL-STATES")
@pytest.mark.claim("a TCP connection has eleven states, and each of them can be reached and observed")
def test_every_state_is_reached_and_observed(lab, family):
    """One lab drives sockets through all eleven states, holding segments so that ss can see the short ones."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.ss("listening")                                              # LISTEN

    # SYN_SENT: the SYN is dropped (once); closing the socket then takes it SYN_SENT -> CLOSE before
    # its first retransmission (after 1 s) could leave.
    lab.faults.drop("client > server", "S", count=1)
    trying = lab.client.socket()
    trying.connect(lab.hosts.server, PORT, nonblocking=True, expect="EINPROGRESS")
    trying_port = trying.getsockname()[1]
    lab.wait_ss("client", lambda s: "SYN-SENT" in s.states(), what="SYN-SENT while its SYN is dropped")
    trying.close()

    # SYN_RECEIVED: the final ACK is dropped (once), the server's request shows as SYN-RECV; the
    # client's first data then carries the ACK and the connection is ESTABLISHED on both sides.
    lab.faults.drop("client > server", ".", payload=False, count=1)
    closer = lab.client.socket()
    closer.connect(lab.hosts.server, PORT)
    closer_port = closer.getsockname()[1]
    lab.wait_ss("server", lambda s: "SYN-RECV" in s.states(), what="SYN-RECV while the final ACK is held")
    closer.send("x")
    closer_peer = srv.accept()
    assert closer_peer.recv(10).ret == "x"                         # nothing unread: close() sends FIN, not RST
    lab.expect_ss(lab.ss("established"), client=["ESTAB"], server=["LISTEN", "ESTAB"])

    # CLOSE_WAIT and LAST_ACK on the server, FIN_WAIT_2 and TIME_WAIT on the client: the client
    # closes first; the server's FIN waits in the server's neighbour queue until ss shows LAST-ACK.
    passive = lab.client.socket()
    passive.connect(lab.hosts.server, PORT)
    passive_port = passive.getsockname()[1]
    passive_peer = srv.accept()
    passive.close()
    lab.wait_ss("server", _port_state(passive_port, "CLOSE-WAIT"), what="CLOSE-WAIT after the client's FIN")
    lab.wait_ss("client", _port_state(passive_port, "FIN-WAIT-2"), what="FIN-WAIT-2 (orphan)")
    with lab.faults.delay("server"):
        passive_peer.close()
        lab.wait_ss("server", _port_state(passive_port, "LAST-ACK"), what="LAST-ACK while its FIN is held")
    lab.wait_ss("client", _port_state(passive_port, "TIME-WAIT"), what="TIME-WAIT after the server's FIN")
    lab.wait_ss("server", lambda s: not s.find(peer_port=passive_port), what="LAST_ACK closed")

    # FIN_WAIT_1 and CLOSING on the client: its FIN is dropped once, so the server's FIN arrives
    # first; the FIN's retransmission (after tcp_rto_min) passes and ends both holds.
    lab.faults.drop("client > server", "F.", count=1)
    closer.close()
    lab.wait_ss("client", _port_state(closer_port, "FIN-WAIT-1"), what="FIN-WAIT-1 while its FIN is held")
    closer_peer.close()
    lab.wait_ss("client", _port_state(closer_port, "CLOSING"), what="CLOSING: the server's FIN came first")
    lab.wait_ss("server", _port_state(closer_port, "FIN-WAIT-2"), what="FIN-WAIT-2 (server)")
    lab.wait_ss("client", _port_state(closer_port, "TIME-WAIT"), what="TIME-WAIT (after CLOSING)")
    lab.wait_ss("server", _port_state(closer_port, "TIME-WAIT"), what="TIME-WAIT (server)")

    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> CLOSE", port=trying_port)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> CLOSING -> CLOSE",
                           port=closer_port)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                           port=closer_port)
    lab.expect_transitions("client", "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
                           port=passive_port)
    lab.expect_transitions("server", "LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
                           port=passive_port)

    table = states_table(lab)
    lab.states_table = table
    for row in table:
        lab.note(f"state {row['state']}: seen by {row['seen_by'] or 'nothing'}: {row['how']}")
    seen_by = {row["state"]: row["seen_by"] for row in table}
    # What the kernel lets each source show: ss never lists CLOSED, the trace never enters TIME_WAIT.
    assert seen_by == {name: ("trace" if name == "CLOSED" else "ss" if name == "TIME_WAIT" else "ss+trace")
                       for name, _, _ in STATES}, "\n".join(f"{r['state']}: {r['seen_by']}: {r['how']}" for r in table)

    lab.verdict(all(row["seen_by"] for row in table),
                f"{sum(1 for row in table if row['seen_by'])} of {len(table)} states observed: "
                + "; ".join(f"{row['state']} by {row['seen_by']} ({row['how']})" for row in table))
