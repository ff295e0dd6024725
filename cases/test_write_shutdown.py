"""Closing the sending direction: what a socket can still do after shutdown(SHUT_WR), how long a
half-closed socket lives, which calls send the passive side's FIN, and what becomes of data that was
sent but not yet acknowledged when the FIN is queued (articles 000, 002, 004).

The steps drive the calls and wait for events with deadlines; the claims are judged from the
record by the judges next to each case. States are held by faults the harness adds and removes,
never caught in ss before a timer moves them on.
"""

import pytest

from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord, Unobservable
from harness.segment import match

PORT = 50000
FIN_TIMEOUT = 1             # a short per-namespace tcp_fin_timeout, seconds
NOSIGNAL = ("MSG_NOSIGNAL",)
DONTWAIT = ("MSG_DONTWAIT",)
UNACKED = 1000              # bytes sent and kept unacknowledged by a drop (SHUT-WR-UNACKED)
# The client's minimum RTO in the cases that end a drop after a step (SHUT-WR-SEND, SHUT-WR-UNACKED):
# the drop ends well before the next copy, however slowly the step runs
DROP_RTO_US = 1_000_000


def listening(lab, program=None, port=PORT):
    srv = (program or lab.server).socket()
    srv.bind(port)
    srv.listen(16)
    return srv


def connect(lab, srv, port=PORT):
    """A client connects while the server is blocked in accept(): (client's socket, server's socket, client port)."""
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, port)
    return cli, accepting.wait(), cli.getsockname()[1]


def _row(snap, **kw):
    found = snap.find(**kw)
    return found[0] if found else None


def _st(row):
    return row.state if row is not None else "no entry"


def _text(data) -> str:
    return data if isinstance(data, str) else ""


def _hist(rec: CaseRecord, role: str, port: int):
    found = [h for h in rec.histories(role, listener=False) if port in (h.local_port, h.peer_port)]
    return found[0] if found else None


# -- FINWAIT2-SEND --------------------------------------------------------------------------------

@judge("FINWAIT2-SEND", claims=[37, 111],
       text="after shutdown(SHUT_WR) a socket can no longer send: FIN_WAIT_1 and FIN_WAIT_2 cannot send data")
def no_send_after_shut_wr(rec: CaseRecord) -> Verdict:
    shut = rec.call("shutdown", role="client")
    sends = {"FIN-WAIT-1": rec.call("send", role="client", n=0), "FIN-WAIT-2": rec.call("send", role="client", n=1)}
    states = {"FIN-WAIT-1": _row(rec.snapshot("client", "after send in FIN-WAIT-1")),
              "FIN-WAIT-2": _row(rec.snapshot("client", "after send in FIN-WAIT-2"))}
    missed = [st for st, row in states.items() if _st(row) != st]
    if missed:
        raise Unobservable(f"the client was not in {' and '.join(missed)} when it called send() "
                           f"(ss: {', '.join(_st(r) for r in states.values())})")
    wire = [s for s in rec.segments(PORT, src="client", payload=True) if s.t >= shut.t0]
    holds = all(not c.ok for c in sends.values()) and not wire
    return verdict_if(holds,
                      f"after shutdown({shut.args.get('how', '?')}) send() with MSG_NOSIGNAL returned "
                      + " and ".join(f"{c.result()} in {st}" for st, c in sends.items())
                      + f"; {sum(s.len for s in wire)} bytes of the client's went on the wire afterwards")


@pytest.mark.claim(no_send_after_shut_wr)
@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
def test_send_after_shutdown_write(lab, family, how):
    """send() after shutdown(SHUT_WR|SHUT_RDWR): in FIN-WAIT-1 (the peer's ACK held) and in FIN-WAIT-2."""
    # The drop ends after the server's ACK is seen: at the default 200 ms minimum RTO the FIN's next
    # copies fell into it when the steps ran slower (2-6 more under TCG in 13 of the 32 guest runs of
    # the 11 recorded matrices, on every kernel). With a 1 s minimum the drop ends before the next
    # copy (on 6.1, which lacks the setting, it is recorded as absent and the 200 ms timer stays).
    lab.set_sysctl("client", "net.ipv4.tcp_rto_min_us", DROP_RTO_US)
    srv, conn, cli = lab.establish(PORT)
    held = lab.faults.drop("server > client", ".", payload=False)    # the ACK of the FIN: FIN-WAIT-1 stays
    cli.shutdown(how, check=False)
    lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-1"), what="FIN-WAIT-1, the ACK held", timeout=5,
                required=False)
    cli.send("in fin-wait-1", flags=NOSIGNAL, check=False)
    lab.ss("after send in FIN-WAIT-1")
    # The drop ends only after it has taken the server's ACK (at once or by its delayed-ACK timer):
    # the ladder is then FIN, dropped ACK, the FIN's retransmission and its ACK, whatever the timing.
    lab.wait_segment(match("server", ".", ack=2, port=PORT), timeout=2, required=False,
                     what="the server's ACK of the FIN, dropped")
    held.release()                                       # the FIN's next retransmission is ACKed
    lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-2"), what="FIN-WAIT-2", timeout=5, required=False)
    cli.send("in fin-wait-2", flags=NOSIGNAL, check=False)
    lab.ss("after send in FIN-WAIT-2")
    conn.recv(100, flags=DONTWAIT, check=False)          # the server reads what came: EOF, or data


# -- FINWAIT2-HELD --------------------------------------------------------------------------------

@judge("FINWAIT2-HELD", claims=[38],
       text="a client's FIN_WAIT_2 and the server's CLOSE_WAIT last until the application closes")
def held_until_close(rec: CaseRecord) -> Verdict:
    fin_timeout = int(rec.sysctl("client", "net.ipv4.tcp_fin_timeout", 60))
    entered = rec.snapshot("client", "half closed")
    past = {r: rec.snapshot(r, "long past tcp_fin_timeout") for r in ("client", "server")}
    cli, srv = _row(past["client"]), _row(past["server"], state="CLOSE-WAIT")
    kept = past["client"].t - entered.t
    if kept < fin_timeout:
        raise Unobservable(f"the half-closed client was looked at only {kept:.2f} s after FIN-WAIT-2, "
                           f"not past tcp_fin_timeout {fin_timeout} s")
    close = rec.call("close", role="client")
    seen, gone = rec.fact("entry seen until / gone by")
    end = rec.snapshot("server", "after close and tcp_fin_timeout")
    timer = cli.timer.name if cli is not None and cli.timer else None
    went = None if gone is None else (seen - close.t0 if seen is not None else 0.0, gone - close.t0)
    holds = (_st(cli) == "FIN-WAIT-2" and timer != "timewait" and _st(srv) == "CLOSE-WAIT"
             and went is not None and _row(end, state="CLOSE-WAIT") is not None)
    return verdict_if(holds,
                      f"with tcp_fin_timeout {fin_timeout} s and the descriptor open, {kept:.1f} s after FIN-WAIT-2 "
                      f"began the client was {_st(cli)} ({timer + ' timer' if timer else 'no timer'}) and the server "
                      f"{_st(srv)}; after the client's close() its entry "
                      + (f"went {went[0]:.2f} to {went[1]:.2f} s later" if went else "stayed")
                      + f", while the server (never closed) stayed {_st(_row(end, state='CLOSE-WAIT'))}")


@pytest.mark.claim(held_until_close)
def test_fin_wait_2_lasts_until_close(lab, family):
    """shutdown(SHUT_WR) keeping the descriptor, tcp_fin_timeout 1 s, the server never closes: FIN-WAIT-2 long past
    the timeout; after close() the entry goes after about tcp_fin_timeout; the server stays CLOSE-WAIT."""
    lab.set_sysctl("client", "net.ipv4.tcp_fin_timeout", FIN_TIMEOUT)
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown("SHUT_WR", check=False)
    lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-2"), what="half closed", timeout=5, required=False)
    lab.hold(2 * FIN_TIMEOUT, "the half-closed client, its descriptor open, past tcp_fin_timeout")
    lab.ss("long past tcp_fin_timeout")
    cli.close()
    seen, gone = lab.wait_gone("client", lambda s: s.rows, lab.start, timeout=FIN_TIMEOUT + 3,
                               what="the client's entry gone after close()", required=False)
    lab.observe("entry seen until / gone by", [None if t is None else round(t, 6) for t in (seen, gone)])
    lab.ss("after close and tcp_fin_timeout")


# -- CLOSEWAIT-FIN --------------------------------------------------------------------------------

WAYS = ("close", "shutdown", "kill")


def _fin_after(rec, port, t):
    return next((s for s in rec.segments(port, src="server", flags="F") if s.t >= t), None)


@judge("CLOSEWAIT-FIN", claims=[79],
       text="only closing the socket sends the passive side's FIN (CLOSE_WAIT -> LAST_ACK)")
def only_close_sends_fin(rec: CaseRecord) -> Verdict:
    ports = rec.fact("client ports")
    acts = {"close": rec.call("close", role="server"), "shutdown": rec.call("shutdown", role="server"),
            "kill": rec.call("kill")}
    before = rec.snapshot("server", "all in CLOSE-WAIT")
    waiting = [w for w in WAYS if _row(before, peer_port=ports[w], state="CLOSE-WAIT") is None]
    if waiting:
        raise Unobservable(f"not in CLOSE-WAIT before the server's calls: {', '.join(waiting)}")
    fins = {w: _fin_after(rec, ports[w], acts[w].t0) for w in WAYS}
    early = [w for w in WAYS if next(iter(rec.segments(ports[w], src="server", flags="F")), None) is not fins[w]]
    chains = {w: _hist(rec, "server", ports[w]) for w in WAYS}
    holds = fins["close"] is not None and fins["shutdown"] is None and not early
    said = {"close": "close()", "shutdown": "shutdown(SHUT_WR) with the descriptor open",
            "kill": "SIGKILL of the process"}
    return verdict_if(holds, "from CLOSE-WAIT: " + "; ".join(
        f"{said[w]} {'sent FIN %.1f ms later' % ((fins[w].t - acts[w].t0) * 1000) if fins[w] else 'sent no FIN'}"
        f" ({' -> '.join(chains[w].states[-3:]) if chains[w] else 'no trace'})" for w in WAYS)
        + (f" (a FIN before the call: {', '.join(early)})" if early else ""))


@pytest.mark.claim(only_close_sends_fin)
def test_which_calls_send_the_passive_fin(lab, family):
    """Three connections in CLOSE-WAIT on the server: one close()d, one shutdown(SHUT_WR) with the descriptor kept,
    one whose process is killed: which send the FIN, which go CLOSE_WAIT -> LAST_ACK?"""
    srv = listening(lab)
    doomed = lab.program("server", "doomed")                # a second server process, to be killed
    ports, conns, clis = {}, {}, []
    for way in WAYS:
        port = PORT + 1 if way == "kill" else PORT
        listener = listening(lab, doomed, port) if way == "kill" else srv
        cli, conns[way], ports[way] = connect(lab, listener, port)
        clis.append(cli)
    lab.observe("client ports", ports)
    for cli in clis:
        cli.close()
    lab.wait_ss("server", lambda s: len(s.find(state="CLOSE-WAIT")) == len(WAYS), what="all in CLOSE-WAIT",
                timeout=5, required=False)
    for way in WAYS:        # each FIN's ACK on its own, at once or by the delayed-ACK timer, never in a FIN
        lab.wait_segment(match("server", ".", ack=2, port=ports[way]), timeout=2, required=False,
                         what=f"the server's ACK of the client's FIN ({way})")
    conns["close"].close()
    conns["shutdown"].shutdown("SHUT_WR", check=False)
    doomed.kill()
    for way in WAYS:
        lab.wait_segment(match("server", "F.", port=ports[way]), timeout=2 if way == "shutdown" else 5,
                         required=False, what=f"the server's FIN after {way}")
    lab.wait_ss("server", lambda s: len(s.find(state="LAST-ACK")) == 0, what="no LAST-ACK left", timeout=5,
                required=False)
    lab.ss("after close, shutdown and kill")


# -- SHUT-WR-UNACKED ------------------------------------------------------------------------------

@judge("SHUT-WR-UNACKED", claims=[112],
       text="shutdown(SHUT_WR) stops retransmitting data that was sent but not yet acknowledged")
def shut_wr_stops_retransmitting(rec: CaseRecord) -> Verdict:
    shut = rec.call("shutdown", role="client")
    acked_before = max((s.ack or 0 for s in rec.segments(PORT, src="server") if s.t < shut.t0), default=0)
    if acked_before > 1:
        raise Unobservable(f"the server had acknowledged up to {acked_before} before shutdown(): the drop did not take")
    sent = rec.call("send", role="client")
    again = [s for s in rec.segments(PORT, src="client", payload=True) if s.t >= shut.t0]
    passed = [s for s in again if not s.dropped_by]
    received = sum(len(_text(c.ret)) for c in rec.calls_of("recv", role="server"))
    reads = [c.result() if not c.ok or len(_text(c.ret)) < 20 else f"{len(c.ret)} bytes"
             for c in rec.calls_of("recv", role="server")]
    fin = next(iter(rec.segments(PORT, src="client", flags="F")), None)
    holds = received < UNACKED and not passed
    fin_said = f"FIN seq {fin.seq} sent {(fin.t - shut.t0) * 1000:.0f} ms after it" if fin else "no FIN"
    return verdict_if(holds,
                      f"{sent.result()} bytes sent and dropped on the path, then shutdown({shut.args.get('how', '?')}) "
                      f"({fin_said}); after it the client sent the data "
                      f"{len(again)} more time(s), {len(passed)} after the drop was removed; the server's recv() "
                      f"returned {', '.join(reads) or 'nothing'}")


@pytest.mark.claim(shut_wr_stops_retransmitting)
@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
def test_shutdown_with_unacknowledged_data(lab, family, how):
    """Data dropped on the path stays unacknowledged; shutdown(); the drop removed: is the data still retransmitted
    and read before EOF?"""
    # The drop is removed after a snapshot: with the default 200 ms minimum RTO a loaded machine
    # (two `ss` runs took 110 ms in a CI job) let one more retransmission fall into the drop. With a
    # 1 s minimum every run drops the same copies (on 6.1, which lacks the setting, it is recorded
    # as absent and the 200 ms timer stays).
    lab.set_sysctl("client", "net.ipv4.tcp_rto_min_us", DROP_RTO_US)
    srv, conn, cli = lab.establish(PORT)
    lost = lab.faults.drop("client > server", payload=True)     # every data segment, until removed
    cli.send(size=UNACKED)
    lab.wait_segment(lambda s: s.src == "client" and s.length > 0, what="the data on the wire (dropped)", timeout=10)
    cli.shutdown(how, check=False)
    # No wait for the FIN here: Linux queues it behind the unacknowledged data (cwnd after a loss).
    lab.ss("after shutdown with unacknowledged data")
    lost.release()
    # The FIN can reach the application only after the data before it: wait for its ACK, then read
    # what the server's kernel holds without blocking (a kernel that dropped the data would hang here).
    lab.wait_segment(lambda s: s.src == "server" and s.ack is not None and s.ack >= UNACKED + 2, timeout=5,
                     required=False, what="the server's ACK of the FIN")
    for _ in range(UNACKED + 1):                         # until EOF, EAGAIN or another error
        data = conn.recv(UNACKED, flags=DONTWAIT, check=False)
        if not data.ok or not data.ret:
            break
    lab.ss("after the server read")
