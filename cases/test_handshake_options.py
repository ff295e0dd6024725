"""What the handshake carries besides SYN and ACK: options, initial sequence numbers, data (TCP Fast Open).

Articles 000, 001 and 003: "the handshake negotiates some very important parameters" (HS-OPTIONS:
each option turned off on the server in turn), "initiates an arbitrary sequence number" (ISN-RANDOM:
absolute ISNs of 20 connections), "a SYN packet can not take any data content" and "data flows after
the three segments" (FASTOPEN: the default next to TCP Fast Open).
"""

import os
import select
import time

import pytest

from harness.judge import Verdict, differs, judge, refuted, verdict_if
from harness.record import CaseRecord

PORT = 50000
TFO_PORT = 50001
SAME_PORT = 50100           # the client port of the connections on one 4-tuple (ISN-RANDOM)
CHUNK = 1000                # HS-OPTIONS: 2 * CHUNK bytes, more than one segment, the first lost once
RTO_MIN_US = 20000          # a lost segment's retransmission timer where the kernel lets us shorten it
TFO_SETTING = "net.ipv4.tcp_fastopen"


def _shorten_rto(lab, role: str):
    """The retransmission timer floor of host `role` down to 20 ms where the kernel has the sysctl
    (6.1 has none: the retransmission then comes after the default 200 ms)."""
    if os.path.exists("/proc/sys/net/ipv4/tcp_rto_min_us"):
        lab.set_sysctl(role, "net.ipv4.tcp_rto_min_us", RTO_MIN_US)


# -- HS-OPTIONS -----------------------------------------------------------------------------------

OPTION_SYSCTL = {"TS": "net.ipv4.tcp_timestamps", "sackOK": "net.ipv4.tcp_sack",
                 "wscale": "net.ipv4.tcp_window_scaling"}
SS_WORD = {"TS": "ts", "sackOK": "sack", "wscale": "wscale"}


@judge("HS-OPTIONS", claims=[88],
       text="the handshake negotiates the connection's parameters: each side announces its MSS, and SACK, "
            "timestamps and window scaling are used afterwards only when both the SYN and the SYN+ACK carried them")
def options_negotiated(rec: CaseRecord) -> Verdict:
    syn = next(iter(rec.segments(PORT, src="client", flags="S")), None)
    synack = next(iter(rec.segments(PORT, src="server", flags="S.")), None)
    later = [s for s in rec.segments(PORT) if "S" not in s.flags and not s.dropped_by]
    rows = {r: next(iter(rec.snapshot(r, "after the exchange").find(state="ESTAB")), None) for r in ("client", "server")}
    used = {
        "TS": any(s.option("TS") for s in later) or all(r and r.info.get("ts") for r in rows.values()),
        "sackOK": any(s.option("sack") for s in later) or all(r and r.info.get("sack") for r in rows.values()),
        "wscale": all(r and r.info.get("wscale") for r in rows.values()),
    }
    offered = {o: bool(syn and syn.option(o)) for o in used}
    accepted = {o: bool(synack and synack.option(o)) for o in used}
    consistent = {o: used[o] == (offered[o] and accepted[o]) for o in used}
    mss = (syn.option("mss") if syn else None, synack.option("mss") if synack else None)
    largest = max((s.len for s in later), default=0)
    mss_ok = None not in mss and largest <= min(mss)
    parts = [f"{o}: SYN {'yes' if offered[o] else 'no'}, SYN+ACK {'yes' if accepted[o] else 'no'}, used "
             f"{'yes' if used[o] else 'no'}" for o in used]
    off = [k for k in OPTION_SYSCTL.values() if rec.sysctl("server", k) == "0"]
    return verdict_if(all(consistent.values()) and mss_ok,
                      f"with {', '.join(f'{k}=0' for k in off) or 'every option on'} on the server: MSS {mss[0]} "
                      f"(SYN) and {mss[1]} (SYN+ACK), data segments up to {largest} bytes; " + "; ".join(parts)
                      + " (used: on a later segment or in ss -i of both sides)")


@pytest.mark.claim(options_negotiated)
@pytest.mark.parametrize("off", [None, "TS", "sackOK", "wscale"],
                         ids=["all-on", "server-no-timestamps", "server-no-sack", "server-no-wscale"])
def test_handshake_options_are_negotiated(lab, family, off):
    """One option turned off on the server (or none): the SYN+ACK drops it and neither side uses it
    later: no timestamps on data, no SACK blocks after a loss, no window scaling in ss -i. The
    client writes two segments at once and the first is lost once."""
    if off:
        lab.set_sysctl("server", OPTION_SYSCTL[off], 0)
    _shorten_rto(lab, "client")
    _, conn, cli = lab.establish(PORT)
    cli.setsockopt("TCP_NODELAY", 1)
    # One write of two segments; the first is lost once, so the second arrives out of order and the
    # server's ACK of it carries a SACK block where SACK was agreed.
    lost = lab.faults.drop("client > server", payload=True, count=1)
    cli.send(size=2 * CHUNK)
    lab.read(conn, 2 * CHUNK, at_least=2 * CHUNK)
    lost.release()
    lab.wait_segment(lambda s: s.src == "server" and s.ack == 2 * CHUNK + 1, timeout=5, required=False,
                     what="the server's ACK of both writes")
    lab.ss("after the exchange")


# -- ISN-RANDOM -----------------------------------------------------------------------------------

def _steps(values: list[int]) -> list[int]:
    return [(b - a) % (1 << 32) for a, b in zip(values, values[1:])]


@judge("ISN-RANDOM", claims=[81],
       text="each side starts a connection from an arbitrary initial sequence number: not zero, different "
            "every time, no fixed step, on the same and on different 4-tuples")
def isn_arbitrary(rec: CaseRecord) -> Verdict:
    groups = {}
    for side, flags in (("client", "S"), ("server", "S.")):
        syns = []
        for s in rec.segments(PORT, src=side, flags=flags):
            if (flags == "S") == (s.flags == "S") and not (syns and (syns[-1].sport, syns[-1].dport, syns[-1].raw_seq)
                                                            == (s.sport, s.dport, s.raw_seq)):
                syns.append(s)          # a retransmitted SYN or SYN+ACK repeats the one before it: one ISN
        if any(s.raw_seq is None for s in syns):
            from harness.record import Unobservable
            raise Unobservable("the record's segments carry no absolute sequence numbers (raw_seq)")
        client_port = (lambda s: s.sport) if side == "client" else (lambda s: s.dport)
        groups[f"{side}, same 4-tuple"] = [s.raw_seq for s in syns if client_port(s) == SAME_PORT]
        groups[f"{side}, different 4-tuples"] = [s.raw_seq for s in syns if client_port(s) != SAME_PORT]
    problems, summary = [], []
    for name, isns in groups.items():
        steps = _steps(isns)
        if len(isns) < 3:
            problems.append(f"{name}: only {len(isns)} ISN(s)")
        if 0 in isns:
            problems.append(f"{name}: an ISN of 0")
        if len(set(isns)) != len(isns):
            problems.append(f"{name}: {len(isns) - len(set(isns))} repeated ISN(s)")
        if len(set(steps)) == 1:
            problems.append(f"{name}: a fixed step of {steps[0]}")
        summary.append(f"{name}: {len(isns)} ISNs, {len(set(isns))} distinct, steps {min(steps, default=0)}.."
                       f"{max(steps, default=0)}")
    return verdict_if(not problems, "; ".join(summary) + (f"; but {'; '.join(problems)}" if problems else ""))


@pytest.mark.claim(isn_arbitrary)
def test_initial_sequence_numbers(lab, family):
    """Ten connections from one client port to one server port (one 4-tuple, each reset so the next can
    start at once) and ten from new ports: the absolute ISNs of both sides."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(32)
    for i in range(20):
        cli = lab.client.socket()
        if i < 10:
            cli.setsockopt("SO_REUSEADDR", 1)
            cli.bind(SAME_PORT)
        cli.connect(lab.hosts.server, PORT)
        conn = srv.accept()
        cli.setsockopt("SO_LINGER", (1, 0))     # close with RST: no TIME-WAIT holds the 4-tuple
        cli.close()
        conn.close()
    lab.ss("after the connections")


# -- FASTOPEN -------------------------------------------------------------------------------------

def _connections(rec: CaseRecord, port: int) -> list[list]:
    """The segments of each connection to `port`, by client port, in order of their first SYN."""
    out: dict = {}
    for s in rec.segments(port):
        cport = s.sport if s.src == "client" else s.dport
        out.setdefault(cport, []).append(s)
    return list(out.values())


def _handshake_then_data(conn: list) -> dict:
    """What one connection's segments show: the SYN's payload and the ack of the SYN+ACK, and whether
    the first data from the client came before the handshake's third segment."""
    syn = next((s for s in conn if s.flags == "S"), None)
    synack = next((s for s in conn if s.flags == "S."), None)
    third = next((s for s in conn if s.src == "client" and "S" not in s.flags and synack and s.t >= synack.t), None)
    first_data = next((s for s in conn if s.src == "client" and s.len), None)
    return {"syn_len": syn.len if syn else None, "synack_ack": synack.ack if synack else None,
            "data_on_syn": bool(first_data and "S" in first_data.flags),
            "data_before_third": bool(first_data and third and (first_data.t < third.t or first_data is syn)),
            "third": third, "client_port": syn.sport if syn else None}


def _tfo_phase(rec: CaseRecord):
    """(default connection, Fast Open connection) facts; the Fast Open one is the last to TFO_PORT."""
    default = next(iter(_connections(rec, PORT)), [])
    tfo = (_connections(rec, TFO_PORT) or [[]])[-1]
    return _handshake_then_data(default), _handshake_then_data(tfo)


@judge("FASTOPEN", claims=[12, 48],
       text="a connection is established before data is sent: data flows only after the three segments "
            "of the handshake")
def data_after_handshake(rec: CaseRecord) -> Verdict:
    d, t = _tfo_phase(rec)
    early = rec.snapshot("server", "Fast Open data read")
    early_accept = rec.fact("accepted before the final ACK")
    tfo_fd = rec.call("accept", role="server").ret
    tfo_fd = tfo_fd.get("fd") if isinstance(tfo_fd, dict) else None
    recv = next((c for c in rec.calls_of("recv", role="server") if c.args.get("fd") == tfo_fd), None)
    child = [r.state for r in early.find(local_port=TFO_PORT, peer_port=t["client_port"])]
    holds_default = d["syn_len"] == 0 and not d["data_before_third"]
    holds_tfo = t["syn_len"] == 0 and not t["data_before_third"]
    evidence = (f"by default the SYN carried {d['syn_len']} bytes and the first data followed the third segment; "
                f"with {TFO_SETTING}=3 on the server (a cookie from a first connection) the SYN carried "
                f"{t['syn_len']} bytes; the server's accept() returned "
                f"{'before' if early_accept else 'only after'} the client's final ACK, its first recv() "
                f"{recv.result() if recv else '(none)'}, and its socket was {'/'.join(child) or 'not'} "
                f"in ss while that ACK was held")
    if holds_default and holds_tfo:
        return verdict_if(True, evidence)
    if holds_default:
        return differs(evidence, f"{TFO_SETTING} without the server bit (0x2), the default: no Fast Open")
    return refuted(evidence)


@judge("FASTOPEN", claims=[82], text="a SYN carries no data but consumes one sequence number")
def syn_carries_no_data(rec: CaseRecord) -> Verdict:
    d, t = _tfo_phase(rec)
    one_number = {n: x["synack_ack"] == (x["syn_len"] or 0) + 1 for n, x in (("default", d), ("tfo", t))}
    evidence = (f"by default the SYN carried {d['syn_len']} bytes and the SYN+ACK acknowledged {d['synack_ack']}; "
                f"with Fast Open the SYN carried {t['syn_len']} bytes and the SYN+ACK acknowledged "
                f"{t['synack_ack']} (payload + 1 for the SYN)")
    holds_default = d["syn_len"] == 0 and one_number["default"]
    holds_tfo = t["syn_len"] == 0 and one_number["tfo"]
    if holds_default and holds_tfo:
        return verdict_if(True, evidence)
    if holds_default and one_number["tfo"]:
        return differs(evidence, f"{TFO_SETTING} without the server bit (0x2), the default: no Fast Open "
                                 "(the SYN still consumes one number under Fast Open)")
    return refuted(evidence)


@pytest.mark.claim(data_after_handshake)
@pytest.mark.claim(syn_carries_no_data)
def test_fast_open_puts_data_on_the_syn(lab, family):
    """Default: connect() then send(): data after the handshake. Fast Open (server tcp_fastopen=3, a
    cookie from a first connection): the SYN carries the data, and the server's accept() + recv()
    return it while the client's final ACK is held and the child is still SYN-RECV."""
    # The default: no Fast Open on the server.
    _, conn, cli = lab.establish(PORT)
    cli.send("hello")
    lab.read(conn, 100)
    lab.wait_segment(lambda s: s.src == "server" and s.ack == 6 and s.dport != TFO_PORT, timeout=5, required=False,
                     what="the server's ACK of the default connection's data")

    lab.set_sysctl("client", TFO_SETTING, 1)        # client side on (the kernel's default)
    lab.set_sysctl("server", TFO_SETTING, 3)        # server side on too
    srv = lab.server.socket()
    srv.bind(TFO_PORT)
    srv.setsockopt("TCP_FASTOPEN", 16)
    srv.listen(16)
    # First connection: the SYN asks for a cookie, data follows the handshake.
    first = lab.client.socket()
    first.setsockopt("TCP_FASTOPEN_CONNECT", 1)
    first.connect(lab.hosts.server, TFO_PORT)
    first.send("first")
    lab.read(srv.accept(timeout=10), 100)
    # Second connection: the cookie lets the SYN carry the data; the client's final ACK is held.
    held = lab.faults.hold("client > server", ".", payload=False)
    cli = lab.client.socket()
    cli.setsockopt("TCP_FASTOPEN_CONNECT", 1)
    cli.connect(lab.hosts.server, TFO_PORT)
    accepting = srv.accept(wait=False)
    cli.send("hello", timeout=10, check=False)
    # With Fast Open accept() returns before the final ACK; without, only once the ACK passes.
    conn = accepting.wait(timeout=5) if _returns_within(accepting, 5) else None
    lab.observe("accepted before the final ACK", conn is not None)
    if conn is not None:
        lab.read(conn, 100)
    lab.ss("Fast Open data read")
    held.release()
    cli.send("more")
    conn = conn or accepting.wait(timeout=10)
    lab.read(conn, 100)
    lab.ss("after the final ACK")


def _returns_within(pending, timeout: float) -> bool:
    """True once the pending call has returned, False if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pending.done():
        if time.monotonic() > deadline:
            return False
        select.select([], [], [], 0.005)
    return True
