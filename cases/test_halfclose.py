"""Half-close: a side that closed one direction (close() without the peer's, shutdown()) and what
still flows, what ss shows meanwhile, and what happens to data around the FIN.

The steps drive the calls and wait for events with deadlines; the articles' claims are judged from
the record by the judges next to each case (harness/judge.py).
"""

import pytest

from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord, Unobservable
from harness.segment import match

PORT = 50000
FIN_TIMEOUT = 1         # the client's shortened per-namespace tcp_fin_timeout, seconds
NOSIGNAL = ("MSG_NOSIGNAL",)
DONTWAIT = ("MSG_DONTWAIT",)


def listening(lab):
    """The server's listener on PORT."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(16)
    return srv


def connect(lab, srv):
    """A client connects while the server is blocked in accept(): (client's socket, server's socket)."""
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    return cli, accepting.wait()


# -- helpers of the judges (pure functions of the record) --------------------------------------

def _hist(rec: CaseRecord, role: str, *, local_port=None, peer_port=None):
    """The (first) non-listening kernel history of host `role` with that local/peer port, or None."""
    found = [h for h in rec.histories(role, listener=False)
             if (local_port is None or h.local_port == local_port) and (peer_port is None or h.peer_port == peer_port)]
    return found[0] if found else None


def _entered(hist, state):
    """When `hist` entered `state` (seconds into the case), or None."""
    if hist is None or state not in hist.states[1:]:
        return None
    i = hist.states.index(state, 1)
    return hist.times[i - 1] if i - 1 < len(hist.times) else None


def _fin(rec, port, src, after=None):
    """The first FIN `src` sent on connection `port` (after time `after`), or None."""
    return rec.first(port, src=src, flags="F", since=after)


def _acker(rec, port, src, upto, after=0.0):
    """The first segment `src` sent on `port` that acknowledges everything up to `upto`, or None."""
    return rec.first(port, src=src, since=after, acks=upto, dropped=False)


def _row(snap, **kw):
    found = snap.find(**kw)
    return found[0] if found else None


def _st(row):
    return row.state if row is not None else "no entry"


def _text(data) -> str:
    return data if isinstance(data, str) else ""


# -- HALFCLOSE-NOCLOSE --------------------------------------------------------------------------

def _nocl_ports(rec):
    ports = rec.fact("client ports")
    return ports["default"], ports["short"]


@judge("HALFCLOSE-NOCLOSE", claims=[100, 101, 114],
       text="when the client closes and the server does not, the client sends FIN, the server ACKs it; the client "
            "sits in FIN_WAIT_2 and the server in CLOSE_WAIT with Recv-Q 1")
def fin_wait_2_and_close_wait(rec: CaseRecord) -> Verdict:
    # Judged on the first connection, whose FIN-WAIT-2 has the default (long) tcp_fin_timeout: nothing
    # depends on catching the second one's 1 s FIN-WAIT-2 in ss on a loaded machine.
    snap = {r: rec.snapshot(r, "both clients closed") for r in ("client", "server")}
    parts, holds = [], True
    for i, port in enumerate(_nocl_ports(rec)):
        fin = _fin(rec, port, "client")
        ack = _acker(rec, port, "server", fin.seq + 1, fin.t) if fin else None
        cli, srv = _row(snap["client"], local_port=port), _row(snap["server"], peer_port=port)
        if i == 0:
            holds = (fin is not None and ack is not None and ack.pure_ack and ack.t <= snap["server"].t
                     and _st(cli) == "FIN-WAIT-2" and _st(srv) == "CLOSE-WAIT" and srv.recv_q == 1)
        parts.append(f"{'default' if i == 0 else 'short'} tcp_fin_timeout: client FIN "
                     f"{'seq %d' % fin.seq if fin else 'not sent'}, server "
                     f"{'%s ack %d' % (ack.flags, ack.ack) if ack else 'no ACK'}, then client {_st(cli)}, server "
                     f"{_st(srv)} (Recv-Q {srv.recv_q if srv else '-'})")
    return verdict_if(holds, "; ".join(parts))


@judge("HALFCLOSE-NOCLOSE", claims=[102],
       text="the client's FIN_WAIT_2 entry (its application closed) goes away after tcp_fin_timeout")
def fin_wait_2_goes_after_fin_timeout(rec: CaseRecord) -> Verdict:
    default_port, port = _nocl_ports(rec)
    default = int(rec.fact("default tcp_fin_timeout"))
    short = int(rec.sysctl("client", "net.ipv4.tcp_fin_timeout", default))
    # Under the default: the timer the kernel gave the orphaned FIN-WAIT-2, from one ss reading.
    snap = rec.snapshot("client", "first client FIN-WAIT-2")
    row = _row(snap, local_port=default_port)
    fin = _fin(rec, default_port, "client")
    ack = _acker(rec, default_port, "server", fin.seq + 1, fin.t) if fin else None
    length = None
    if row is not None and row.timer is not None and row.timer.name == "timewait" and ack is not None:
        # ss prints whole seconds: what was left lies in [remaining, remaining + 1) at the reading
        length = (row.timer.remaining + snap.before - ack.t, row.timer.remaining + 1 + snap.after - ack.t)
    default_ok = length is not None and length[0] - 0.05 <= default <= length[1] + 0.05
    # Shortened per namespace: when the entry went, measured from the ACK of its FIN.
    low, high = rec.fact("short entry seen until / gone by")
    # the last reading that still showed the entry: the poll's own, or an earlier snapshot's
    shown = [sn.before for sn in rec.snapshots("client") if sn.find(local_port=port, state="FIN-WAIT-2")]
    low = max([t for t in [low] + shown if t is not None], default=None)
    fin2 = _fin(rec, port, "client")
    ack2 = _acker(rec, port, "server", fin2.seq + 1, fin2.t) if fin2 else None
    if ack2 is None or low is None:
        raise Unobservable("the second client's FIN was not ACKed, or its FIN-WAIT-2 entry never seen")
    low, high = low - ack2.t, (None if high is None else high - ack2.t)
    # kernel timers fire late, never early; late by up to a second under load
    short_ok = high is not None and high >= short - 0.05 and low <= short + 1.0
    went = f"went {low:.2f} to {high:.2f} s after the ACK of its FIN" if high is not None else \
        f"was still there {low:.2f} s after the ACK of its FIN"
    timer = f"a timewait timer of {length[0]:.1f} to {length[1]:.1f} s" if length else "no timewait timer"
    return verdict_if(default_ok and short_ok,
                      f"under the default tcp_fin_timeout {default} s ss showed the first (orphaned) client "
                      f"{_st(row)} with {timer}; "
                      f"with tcp_fin_timeout shortened to {short} s in the client's namespace the entry {went}")


@judge("HALFCLOSE-NOCLOSE", claims=[7, 78],
       text="a passive side whose application never closes stays in CLOSE_WAIT (it waits for the local user's close)")
def close_wait_stays(rec: CaseRecord) -> Verdict:
    default_port, port = _nocl_ports(rec)
    after = rec.snapshot("server", "after the shortened tcp_fin_timeout")
    cli_after = rec.snapshot("client", "after the shortened tcp_fin_timeout")
    rows = {p: _row(after, peer_port=p) for p in (default_port, port)}
    close = rec.call("close", role="server")
    hist = _hist(rec, "server", peer_port=default_port)
    left = _entered(hist, "LAST_ACK")
    holds = all(_st(r) == "CLOSE-WAIT" for r in rows.values()) and (left is None or left >= close.t0)
    return verdict_if(holds,
                      f"after the shortened tcp_fin_timeout (the client's second entry now: "
                      f"{_st(_row(cli_after, local_port=port))}) the server's sockets, never closed, "
                      f"were {_st(rows[default_port])} and {_st(rows[port])}; the first left CLOSE_WAIT for LAST_ACK "
                      + (f"{(left - close.t0) * 1000:.1f} ms after the application's close()" if left is not None
                         else "never (trace)"))


@judge("HALFCLOSE-NOCLOSE", claims=[77],
       text="the ACK of a FIN is sent by TCP, not by the application")
def tcp_acks_the_fin(rec: CaseRecord) -> Verdict:
    default_port, _ = _nocl_ports(rec)
    fin = _fin(rec, default_port, "client")
    ack = _acker(rec, default_port, "server", fin.seq + 1, fin.t) if fin else None
    nxt = next((c for c in rec.calls_of(role="server") if fin is not None and c.t0 > fin.t), None)
    holds = ack is not None and (nxt is None or ack.t < nxt.t0)
    answer = f"{ack.flags} ack {ack.ack} {(ack.t - fin.t) * 1000:.1f} ms after it" if ack else "nothing"
    return verdict_if(holds,
                      f"the server's kernel answered the FIN with {answer}; the server program's next "
                      f"call, {nxt.op + '()' if nxt else 'none'}, came "
                      + (f"{(nxt.t0 - fin.t) * 1000:.0f} ms after the FIN" if nxt else "never"))


@judge("HALFCLOSE-NOCLOSE", claims=[73],
       text="on the peer's FIN the system ACKs and enters CLOSE_WAIT; the application's close then sends the FIN")
def close_wait_then_close_sends_fin(rec: CaseRecord) -> Verdict:
    default_port, _ = _nocl_ports(rec)
    fin = _fin(rec, default_port, "client")
    ack = _acker(rec, default_port, "server", fin.seq + 1, fin.t) if fin else None
    hist = _hist(rec, "server", peer_port=default_port)
    close = rec.call("close", role="server")
    own = _fin(rec, default_port, "server", after=close.t0)
    early = _fin(rec, default_port, "server")
    holds = (ack is not None and ack.pure_ack and _entered(hist, "CLOSE_WAIT") is not None and own is not None
             and early is own and _entered(hist, "LAST_ACK") is not None)
    got = "no ACK" if ack is None else "a pure ACK" if ack.pure_ack else ack.flags
    return verdict_if(holds,
                      f"the client's FIN got {got} and the server socket went {hist.text() if hist else '(no trace)'}; the server's FIN "
                      + (f"left {(own.t - close.t0) * 1000:.1f} ms after its close()" if own else "never left")
                      + ("" if early is own else " (a FIN left before the close)"))


@judge("HALFCLOSE-NOCLOSE", claims=[50],
       text="a side that received a FIN can still send")
def sends_after_fin(rec: CaseRecord) -> Verdict:
    _, port = _nocl_ports(rec)
    eof = rec.call("recv", role="server")
    late = rec.call("send", role="server", n=0)
    later = rec.call("send", role="server", n=-1)
    data = [s for s in rec.segments(port, src="server", payload=True) if s.t >= late.t0]
    rst = next(iter(rec.segments(port, src="client", flags="R")), None)
    holds = eof.ret == "" and late.ok and late.ret == 4 and len(data) >= 1
    return verdict_if(holds,
                      f"after recv() returned {eof.result()} the server's send() returned {late.result()} and "
                      f"{sum(s.len for s in data)} bytes went on the wire; the client, gone, answered "
                      f"{'RST' if rst else 'nothing'} and the next send() returned {later.result()}")


@pytest.mark.claim(fin_wait_2_and_close_wait)
@pytest.mark.claim(fin_wait_2_goes_after_fin_timeout)
@pytest.mark.claim(close_wait_stays)
@pytest.mark.claim(tcp_acks_the_fin)
@pytest.mark.claim(close_wait_then_close_sends_fin)
@pytest.mark.claim(sends_after_fin)
def test_fin_wait_2_times_out_close_wait_stays(lab, family):
    """Two clients close, the server never: FIN-WAIT-2 / CLOSE-WAIT, tcp_fin_timeout default then 1 s, a late send()."""
    srv = listening(lab)
    old_cli, old_conn = connect(lab, srv)
    cli, conn = connect(lab, srv)
    old_port, port = old_cli.getsockname()[1], cli.getsockname()[1]
    lab.observe("client ports", {"default": old_port, "short": port})
    lab.observe("default tcp_fin_timeout", int(lab.hosts.client.get_sysctl("net.ipv4.tcp_fin_timeout")))

    old_cli.close()                                     # under the default tcp_fin_timeout
    lab.wait_segment(match("server", ".", ack=2, port=old_port), what="the server's ACK of the first FIN",
                     timeout=5, required=False)
    lab.wait_ss("client", lambda s: s.find(local_port=old_port, state="FIN-WAIT-2"), timeout=5, required=False,
                what="first client FIN-WAIT-2")

    lab.set_sysctl("client", "net.ipv4.tcp_fin_timeout", FIN_TIMEOUT)
    cli.close()
    lab.wait_segment(match("server", ".", ack=2, port=port), what="the server's ACK of the second FIN",
                     timeout=5, required=False)
    lab.wait_ss("client", lambda s: s.find(local_port=port, state="FIN-WAIT-2"), timeout=5, required=False,
                what="second client FIN-WAIT-2")
    lab.ss("both clients closed, the server did not")
    seen, gone = lab.wait_gone("client", lambda s: s.find(local_port=port), lab.start, timeout=FIN_TIMEOUT + 3,
                               what="the second client's entry gone", required=False)
    lab.observe("short entry seen until / gone by", [None if t is None else round(t, 6) for t in (seen, gone)])
    lab.ss("after the shortened tcp_fin_timeout")

    conn.recv(100, timeout=5, check=False)              # reading the EOF consumes the FIN's sequence number
    lab.ss("the server read EOF")
    conn.send("late", check=False)                      # the server finally writes to a peer that has gone
    lab.wait_segment(match("client", "R", port=port), what="the client's RST", timeout=5, required=False)
    conn.send("more", check=False)
    lab.ss("after the late sends")
    old_conn.close()                                    # the first connection: the server's close sends its FIN
    lab.wait_segment(match("client", ".", ack=2, seq=2, port=old_port), timeout=5, required=False,
                     what="the client's ACK of the server's FIN")
    lab.ss("after the server closed the first connection")


# -- HALFCLOSE-DATA -----------------------------------------------------------------------------

@judge("HALFCLOSE-DATA", claims=[36, 68],
       text="FIN_WAIT_2 is a half connection: a socket in FIN_WAIT_2 still receives what the peer sends")
def fin_wait_2_receives(rec: CaseRecord) -> Verdict:
    half = _row(rec.snapshot("client", "half closed"))
    sent = rec.call("send", role="server")
    got = rec.call("recv", role="client", n=0)
    data = next(iter(rec.segments(PORT, src="server", payload=True)), None)
    acked = _acker(rec, PORT, "client", data.seq + data.len, data.t) if data else None
    holds = _st(half) == "FIN-WAIT-2" and got.ret == "more data" and acked is not None
    return verdict_if(holds,
                      f"with the client {_st(half)} (its FIN ACKed), the server's send() returned {sent.result()}; "
                      f"the client ACKed the data ({'ack %d' % acked.ack if acked else 'no ACK'}) and its recv() "
                      f"returned {got.result()}")


@judge("HALFCLOSE-DATA", claims=[50, 62, 91],
       text="a received FIN ends only that direction: the side that received it can still send")
def sender_after_fin(rec: CaseRecord) -> Verdict:
    eof = rec.call("recv", role="server")
    sent = rec.call("send", role="server")
    got = rec.call("recv", role="client", n=0)
    srv = next((r for r in rec.snapshot("server", "half closed").rows if r.state != "LISTEN"), None)
    holds = eof.ret == "" and sent.ok and sent.ret == 9 and got.ret == "more data"
    return verdict_if(holds,
                      f"the server ({_st(srv)}) read {eof.result()} (the client's FIN), then its send() returned "
                      f"{sent.result()} and the client read {got.result()}")


@judge("HALFCLOSE-DATA", claims=[15, 49],
       text="each direction is closed on its own, by its own FIN")
def each_direction_own_fin(rec: CaseRecord) -> Verdict:
    cfin, sfin = _fin(rec, PORT, "client"), _fin(rec, PORT, "server")
    data = next(iter(rec.segments(PORT, src="server", payload=True)), None)
    end = rec.call("recv", role="client", n=-1)
    got = rec.call("recv", role="client", n=0)
    holds = (cfin is not None and sfin is not None and data is not None and cfin.t < data.t < sfin.t
             and got.ret == "more data" and end.ret == "" and end.t1 >= sfin.t)
    return verdict_if(holds,
                      f"client FIN {'at seq %d' % cfin.seq if cfin else 'never'}; server data "
                      f"{'%d:%d' % (data.seq, data.seq + data.len) if data else 'none'} after it; server FIN "
                      f"{'at seq %d' % sfin.seq if sfin else 'never'}; the client read {got.result()} and then "
                      f"{end.result()}")


@pytest.mark.claim(fin_wait_2_receives)
@pytest.mark.claim(sender_after_fin)
@pytest.mark.claim(each_direction_own_fin)
def test_half_closed_client_still_receives(lab, family):
    """The client shuts down writing; the server keeps sending, the client reads it in FIN-WAIT-2; the server closes."""
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown("SHUT_WR")
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN", timeout=5,
                     required=False)
    conn.recv(100, timeout=5, check=False)
    lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="the client's FIN-WAIT-2", timeout=5,
                required=False)
    lab.ss("half closed")
    conn.send("more data", check=False)                 # the server, in CLOSE-WAIT, keeps sending
    cli.recv(100, timeout=5, check=False)
    lab.wait_segment(match("client", ".", ack=10), what="the client's ACK of the data", timeout=5, required=False)
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=11), what="the client's ACK of the server's FIN", timeout=5,
                     required=False)
    cli.recv(100, timeout=5, check=False)
    lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone", timeout=5,
                required=False)
    lab.ss("after the server's close")


# -- SHUT-RD ------------------------------------------------------------------------------------

@judge("SHUT-RD", claims=[107], text="shutdown(SHUT_RD) sends nothing at all")
def shut_rd_sends_nothing(rec: CaseRecord) -> Verdict:
    shut = rec.call("shutdown", role="client")
    send = rec.call("send", role="server")
    sent = [s for s in rec.segments(PORT, src="client") if shut.t0 <= s.t < send.t0]
    return verdict_if(shut.ok and not sent,
                      f"shutdown(SHUT_RD) returned {shut.result()}; the client sent "
                      f"{', '.join(s.text for s in sent) or 'no segment'} before the server's next send()")


@judge("SHUT-RD", claims=[109, 110],
       text="after shutdown(SHUT_RD) data the peer sends is discarded: the peer sends in vain")
def shut_rd_discards(rec: CaseRecord) -> Verdict:
    first, data_call, after = (rec.call("recv", role="client", n=i) for i in (0, 1, 2))
    data = next(iter(rec.segments(PORT, src="server", payload=True)), None)
    answer = next((s for s in rec.segments(PORT, src="client") if data and s.t >= data.t), None)
    row = _row(rec.snapshot("client", "the data in the client's Recv-Q"))
    read = _text(data_call.ret) + _text(after.ret)
    holds = "after" not in read
    return verdict_if(holds,
                      f"recv() right after shutdown(SHUT_RD) returned {first.result()}; the server's 5 bytes were "
                      f"answered with {answer.flags + ' ack %s' % answer.ack if answer else 'nothing'}, ss showed "
                      f"Recv-Q {row.recv_q if row else '-'}, and the next recv() calls returned {data_call.result()} "
                      f"and {after.result()}")


@pytest.mark.claim(shut_rd_sends_nothing)
@pytest.mark.claim(shut_rd_discards)
def test_shutdown_read(lab, family):
    """The client shuts down reading: what goes on the wire, what becomes of later data, what recv() returns."""
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown("SHUT_RD", check=False)
    cli.recv(100, flags=DONTWAIT, check=False)          # nothing has arrived yet
    conn.send("after", check=False)
    lab.wait_segment(lambda s: s.src == "client" and s.ack == 6, timeout=5, required=False,
                     what="the client's answer to the data")
    lab.wait_ss("client", lambda s: s.rows and s.rows[0].recv_q == 5, what="the data in the client's Recv-Q",
                timeout=5, required=False)
    lab.ss("after the server's send")
    cli.recv(100, flags=DONTWAIT, check=False)
    cli.recv(100, flags=DONTWAIT, check=False)


# -- SHUT-WR ------------------------------------------------------------------------------------

@judge("SHUT-WR", claims=[108],
       text="shutdown(SHUT_WR) or shutdown(SHUT_RDWR) sends a FIN; when the server then closes the client ends in "
            "TIME_WAIT")
def shutdown_sends_fin_then_time_wait(rec: CaseRecord) -> Verdict:
    shut = rec.call("shutdown", role="client")
    close = rec.call("close", role="server")
    fins = [s for s in rec.segments(PORT, src="client", flags="F") if shut.t0 <= s.t < close.t0]
    half = _row(rec.snapshot("client", "half closed"))
    after = rec.snapshot("client", "after the server's close")
    tw = _row(after, state="TIME-WAIT")
    holds = shut.ok and len(fins) >= 1 and tw is not None
    return verdict_if(holds,
                      f"shutdown({shut.args.get('how', '?')}) returned {shut.result()} and sent "
                      f"{'FIN seq %d' % fins[0].seq if fins else 'no FIN'}; the client then showed {_st(half)} "
                      f"({half.timer.name + ' timer' if half and half.timer else 'no timer'}); after the server's "
                      f"close, with its descriptor still open: {', '.join(after.states()) or 'no entry'}")


@pytest.mark.claim(shutdown_sends_fin_then_time_wait)
@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
def test_shutdown_write_then_server_close(lab, family, how):
    """The client shuts down (SHUT_WR or SHUT_RDWR) without close(); the server reads EOF and closes."""
    srv, conn, cli = lab.establish(PORT)
    cli.shutdown(how, check=False)
    lab.wait_segment(match("server", ".", ack=2), what="the server's ACK of the client's FIN", timeout=5,
                     required=False)
    lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="half closed", timeout=5, required=False)
    conn.recv(100, timeout=5, check=False)
    conn.close()
    lab.wait_segment(match("client", ".", seq=2, ack=2), what="the client's ACK of the server's FIN", timeout=5,
                     required=False)
    lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone", timeout=5,
                required=False)
    lab.ss("after the server's close, the client's descriptor still open")
    cli.recv(100, flags=DONTWAIT, check=False)
    cli.close()


# -- SHUT-WR-QUEUED -----------------------------------------------------------------------------

QUEUED = 10000


@judge("SHUT-WR-QUEUED", claims=[112],
       text="shutdown(SHUT_WR) discards data that was written but is still unsent in the send buffer")
def shut_wr_discards_unsent(rec: CaseRecord) -> Verdict:
    probing = _row(rec.snapshot("client", "the client probing the closed window"))
    unsent = probing.info.get("notsent", 0) if probing else 0
    if not unsent:
        raise Unobservable("nothing was left unsent in the client's send buffer when shutdown() came "
                           f"(ss: {probing.state if probing else 'no entry'})")
    shut = rec.call("shutdown", role="client")
    closing = _row(rec.snapshot("client", "after shutdown with unsent data"))
    received = sum(len(_text(c.ret)) for c in rec.calls_of("recv", role="server") if c.t0 >= shut.t0)
    fin = _fin(rec, PORT, "client")
    holds = received < QUEUED
    return verdict_if(holds,
                      f"shutdown({shut.args.get('how', '?')}) came with {unsent} bytes not yet sent (window 0, "
                      f"Send-Q {probing.send_q}); the client went {_st(closing)}; the server then read {received} of "
                      f"{QUEUED} bytes before EOF; the FIN "
                      + (f"rode on {fin.flags} {fin.seq}:{fin.seq + fin.len}({fin.len})" if fin else "never came"))


@pytest.mark.claim(shut_wr_discards_unsent)
@pytest.mark.timing_dependent("segments", why="how many window updates the receiver sends follows how its reads interleave with the arriving segments")
@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
def test_shutdown_write_with_unsent_data(lab, family, how):
    """The server's window is closed with data still queued at the client; shutdown(): is the data delivered?"""
    # Window probes may leave while the window is closed (paced by the RTO): they carry no new data
    # and the judge counts only what the server reads, so no timer setting is needed (6.1 has no
    # tcp_rto_min_us).
    srv = lab.server.socket()
    srv.setsockopt("SO_RCVBUF", 1)                      # the kernel's minimum, inherited by the accepted socket
    srv.bind(PORT)
    srv.listen(16)
    cli, conn = connect(lab, srv)
    conn.getsockopt("SO_RCVBUF")
    cli.setsockopt("SO_SNDBUF", 1 << 20)                # room for all of it: send() returns at once
    cli.send(size=QUEUED)
    lab.wait_segment(lambda s: s.src == "server" and s.win == 0, what="a zero window from the server", timeout=10)
    lab.wait_ss("client", lambda s: s.rows and s.rows[0].timer and s.rows[0].timer.name == "persist",
                what="the client probing the closed window", timeout=10)
    cli.shutdown(how, check=False)
    lab.ss("after shutdown with unsent data")
    while True:                                         # now the server reads everything out
        # MSG_WAITALL: the kernel copies segment after segment and sends each window update at once;
        # a round trip to the case per segment could outlast the server's 40 ms delayed ACK.
        data = conn.recv(QUEUED, flags=("MSG_WAITALL",), timeout=5, check=False)
        if not data.ok or not data.ret:
            break
    lab.wait_segment(lambda s: s.src == "client" and "F" in s.flags, what="the client's FIN", timeout=5,
                     required=False)
    lab.wait_ss("client", lambda s: s.states() == ["FIN-WAIT-2"], what="after reading everything", timeout=5,
                required=False)
