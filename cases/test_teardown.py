"""Connection tear-down: the four-way close, who ends in which state, TIME_WAIT, and every way a
socket gets closed (kill, exit, unread data, dup/fork, descriptor exhaustion, SO_LINGER 0).

Each case drives the calls and waits for events that happen whichever way the kernel behaves (the
next segment a side sends after a call, an ss entry or its absence, with deadlines); the judges
below each case decide the articles' claims from the record.
"""

import signal

import pytest

from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord
from harness.segment import match

PORT = 50000
RFC9293_MSL = 120.0     # RFC 9293 (and 793): MSL "arbitrarily defined to be 2 minutes"; the articles give none

ARTICLE_CLIENT_PATH = ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"]
ARTICLE_SERVER_PATH = ["CLOSE", "LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
KERNEL_FOR_SS = {"FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
                 "CLOSING": "CLOSING", "LAST-ACK": "LAST_ACK", "CLOSE-WAIT": "CLOSE_WAIT"}


# -- steps shared by the cases ------------------------------------------------------------------

def only_listener(snap):
    return snap.states() == ["LISTEN"]


def close_both(lab, first, second, first_role: str, second_role: str):
    """`first` closes, then (once its peer's kernel answered) `second` reads EOF and closes; each
    side's answer is awaited as an event, whatever it is."""
    t = first.close().t0
    lab.next_segment(second_role, t, f"{second_role}'s answer to {first_role}'s close", port=PORT)
    lab.ss("half closed")
    second.recv(100, timeout=2, check=False)
    t = second.close().t0
    lab.next_segment(first_role, t, f"{first_role}'s answer to {second_role}'s close", port=PORT)


# -- what the judges read -----------------------------------------------------------------------

def close_segments(rec: CaseRecord, port: int = PORT):
    """The segments from the first FIN (or RST) on: the close as it crossed the link."""
    segs = rec.segments(port)
    first = next((i for i, s in enumerate(segs) if s.has("F") or s.has("R")), len(segs))
    return segs[first:]


def fin_of(rec: CaseRecord, src: str, port: int = PORT):
    return rec.first(port, src=src, flags="F")


def acked_by(rec: CaseRecord, seg, port: int = PORT):
    """The other side's answer to `seg`: its first later segment acknowledging data up to `seg` (or None)."""
    if seg is None:
        return None
    other = "client" if seg.src == "server" else "server"
    return rec.first(port, src=other, since=seg.t, acks=seg.seq)


def flags_text(segs) -> str:
    return ", ".join(f"{s.src} {s.flags}" for s in segs) or "none"


def tw_rows(rec: CaseRecord, role: str, label: str):
    return [r for r in rec.snapshot(role, label).rows if r.state == "TIME-WAIT"]


def timer_length(row, snap, since: float):
    """(low, high): the length the kernel gave `row`'s timer, started at `since`, from one ss reading.
    ss prints whole seconds (60 s and more as "1min"): what was left lies in [remaining, remaining + 1)."""
    before = snap.before if snap.before is not None else snap.t
    after = snap.after if snap.after is not None else snap.t
    return row.timer.remaining + before - since, row.timer.remaining + 1 + after - since


# -- CLOSE-4WAY ---------------------------------------------------------------------------------

def four_way_close(lab):
    """Client closes first, server follows; ends with both sides' ss after the close."""
    srv, conn, cli = lab.establish(PORT)
    t = cli.send("hello").t0
    conn.recv(100, timeout=2, check=False)
    lab.next_segment("server", t, "the server's ACK of the data", port=PORT)
    close_both(lab, cli, conn, "client", "server")
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT"), timeout=1, required=False,
                what="the client's entry after the close")
    lab.wait_ss("server", only_listener, timeout=1, required=False, what="the server's entry after the close")
    lab.ss("after the four-way close")


@judge("CLOSE-4WAY", claims=[16, 103, 71],
       text="closing takes four segments, FIN, ACK, FIN, ACK (the peer's ACK before its FIN); the active closer "
            "ends in TIME_WAIT and the passive closer keeps no entry")
def fin_ack_fin_ack(rec: CaseRecord) -> Verdict:
    segs = close_segments(rec)
    shape = [(s.src, "F" if s.has("F") else "R" if s.has("R") else "." if s.len == 0 else "data") for s in segs]
    four = shape == [("client", "F"), ("server", "."), ("server", "F"), ("client", ".")]
    client = sorted(rec.states("client", "after the four-way close"))
    server = [s for s in rec.states("server", "after the four-way close") if s != "LISTEN"]
    return verdict_if(four and client == ["TIME-WAIT"] and not server,
                      f"the close crossed the link as {flags_text(segs)}; afterwards the client shows "
                      f"{client or 'no entry'}, the server {server or 'no entry'} (besides its listener)")


@judge("CLOSE-4WAY", claims=[52, 53, 63, 89, 90, 92],
       text="each FIN takes one sequence number: the FIN with seq u is acknowledged with u+1, the peer's FIN "
            "with seq w with w+1")
def fin_takes_one_number(rec: CaseRecord) -> Verdict:
    fin_c, fin_s = fin_of(rec, "client"), fin_of(rec, "server")
    ack_c, ack_s = acked_by(rec, fin_c), acked_by(rec, fin_s)
    ok = all(x is not None for x in (fin_c, fin_s, ack_c, ack_s)) and \
        ack_c.ack == fin_c.seq + fin_c.len + 1 and ack_s.ack == fin_s.seq + fin_s.len + 1

    def pair(fin, ack):
        if fin is None:
            return "no FIN"
        return f"FIN seq {fin.seq} acknowledged with {ack.ack if ack else 'nothing'}"
    return verdict_if(ok, f"client: {pair(fin_c, ack_c)}; server: {pair(fin_s, ack_s)}")


@judge("CLOSE-4WAY", claims=[5, 6, 9, 25, 66, 74],
       text="FIN_WAIT_1 waits for the ACK of its FIN (then FIN_WAIT_2), FIN_WAIT_2 for the peer's FIN; LAST_ACK "
            "waits for the ACK of its FIN, then the passive closer is CLOSED")
def close_states_follow_segments(rec: CaseRecord) -> Verdict:
    client, server = rec.history("client", PORT), rec.history("server", PORT)
    fin_c, fin_s = fin_of(rec, "client"), fin_of(rec, "server")
    ack_c, ack_s = acked_by(rec, fin_c), acked_by(rec, fin_s)

    def entered(hist, state):
        if hist is None or state not in hist.states[1:]:
            return None
        return hist.times[hist.states.index(state, 1) - 1]
    fw2, last_ack, closed = entered(client, "FIN_WAIT2"), entered(server, "LAST_ACK"), None
    if server is not None and server.states[-1] == "CLOSE" and len(server.times) == len(server.states) - 1:
        closed = server.times[-1]
    near = lambda a, b: a is not None and b is not None and abs(a - b) < 0.05   # noqa: E731
    holds = (near(fw2, ack_c.t if ack_c else None) and last_ack is not None and fin_s is not None
             and last_ack <= fin_s.t + 0.05 and near(closed, ack_s.t if ack_s else None))
    return verdict_if(holds, f"client {client.text() if client else '(no trace)'}: FIN_WAIT2 at "
                             f"{_ms(fw2)}, the ACK of its FIN at {_ms(ack_c.t if ack_c else None)}; server "
                             f"{server.text() if server else '(no trace)'}: LAST_ACK at {_ms(last_ack)}, CLOSE at "
                             f"{_ms(closed)}, the final ACK at {_ms(ack_s.t if ack_s else None)}")


@judge("CLOSE-4WAY", claims=[31, 69],
       text="TIME_WAIT (the '2MSL state') follows the active closer's ACK of the peer's FIN")
def time_wait_follows_last_ack(rec: CaseRecord) -> Verdict:
    final = acked_by(rec, fin_of(rec, "server"))
    rows = tw_rows(rec, "client", "after the four-way close")
    timer = rows[0].timer if rows else None
    holds = final is not None and final.src == "client" and bool(rows) and timer is not None \
        and timer.name == "timewait"
    last = f"{final.flags} ack {final.ack}" if final else "none"
    entry = f"TIME-WAIT with timer:({timer.name},{timer.remaining:g}s)" if timer else "no TIME-WAIT entry"
    return verdict_if(holds, f"the client's ACK of the server's FIN: {last}; ss then shows the client in {entry}")


@judge("CLOSE-4WAY", claims=[79],
       text="only closing the socket sends the passive side's FIN")
def passive_fin_follows_close(rec: CaseRecord) -> Verdict:
    fin_s = fin_of(rec, "server")
    listener = rec.call("socket", role="server", n=0).ret
    closes = [c for c in rec.calls_of("close", role="server") if c.args.get("fd") != listener]
    close = closes[-1] if closes else None
    holds = fin_s is not None and close is not None and fin_s.t >= close.t0
    return verdict_if(holds, f"the server's FIN left at {_ms(fin_s.t if fin_s else None)}, its close() was called at "
                             f"{_ms(close.t0 if close else None)}")


@judge("CLOSE-4WAY", claims=[60],
       text="what makes a connection change state are the user's calls (OPEN, SEND, RECEIVE, CLOSE, ABORT, STATUS)")
def transitions_come_from_calls(rec: CaseRecord) -> Verdict:
    hists = rec.histories(port=PORT)
    windows = [(c.role, c.t0, c.t1) for c in rec.calls]
    inside, outside = [], []
    for h in hists:
        for old, new, t in zip(h.states, h.states[1:], h.times):
            during = any(role == h.local_role and t0 - 0.001 <= t <= t1 + 0.001 for role, t0, t1 in windows)
            (inside if during else outside).append(f"{h.local_role} {old} -> {new}")
    return verdict_if(not outside and inside,
                      f"{len(inside)} of {len(inside) + len(outside)} transitions happened inside a call of the "
                      f"socket's program; the others came with arriving segments or timers: "
                      f"{', '.join(outside) or 'none'}")


def _ms(t) -> str:
    return "never" if t is None else f"+{t * 1000:.3f} ms"


@pytest.mark.claim(fin_ack_fin_ack)
@pytest.mark.claim(fin_takes_one_number)
@pytest.mark.claim(close_states_follow_segments)
@pytest.mark.claim(time_wait_follows_last_ack)
@pytest.mark.claim(passive_fin_follows_close)
@pytest.mark.claim(transitions_come_from_calls)
def test_four_way_close(lab, family):
    """Client then server close: FIN, ACK, FIN, ACK; the client sits in TIME-WAIT, the server keeps nothing."""
    four_way_close(lab)


# -- CLOSE-PATHS ---------------------------------------------------------------------------------

def client_path(rec: CaseRecord):
    hist = rec.history("client", PORT)
    if hist is None:
        return [], "(no trace of the client's socket)"
    states = list(hist.states)
    extra = []
    if "TIME_WAIT" not in states and states[-1:] == ["CLOSE"]:
        # The trace's last '-> CLOSE' is the replacement by a timewait socket: ss shows the rest.
        states = states[:-1]
        for label in ("half closed", "after the close"):
            for row in rec.snapshot("client", label).rows:
                name = KERNEL_FOR_SS.get(row.state)
                if row.peer_port == PORT and name in ("FIN_WAIT2", "TIME_WAIT") and name not in states + extra:
                    extra.append(name)
        states += extra
    elif states[-2:] == ["TIME_WAIT", "CLOSE"]:
        states = states[:-1]         # the timewait probes saw it end: the article's last CLOSED
    return states, f"{hist.text()} (trace)" + (f", then {' -> '.join(extra)} (ss, a timewait socket)" if extra else "")


@judge("CLOSE-PATHS", claims=[20, 22],
       text="the client goes CLOSED, SYN_SENT, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT (and CLOSED)")
def client_path_matches(rec: CaseRecord) -> Verdict:
    states, how = client_path(rec)
    return verdict_if(states == ARTICLE_CLIENT_PATH[:-1], f"client: {how}; TIME_WAIT ends in CLOSED when its timer "
                                                          f"fires, after the case")


@judge("CLOSE-PATHS", claims=[23],
       text="the server goes CLOSED, LISTEN, SYN_RCVD, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSED")
def server_path_matches(rec: CaseRecord) -> Verdict:
    listener, conn = rec.history("server", PORT, listener=True), rec.history("server", PORT)
    path = (listener.states[:2] if listener else []) + (conn.states[1:] if conn else [])
    return verdict_if(path == ARTICLE_SERVER_PATH,
                      f"server: the listener {listener.text() if listener else '(none)'}; the connection, a new socket, "
                      f"{conn.text() if conn else '(none)'}")


@judge("CLOSE-PATHS", claims=[21],
       text="the client is ESTABLISHED when the ACK of its SYN (the SYN+ACK) arrives, before the server is")
def client_established_first(rec: CaseRecord) -> Verdict:
    def when(role):
        h = rec.history(role, PORT)
        if h is None or "ESTABLISHED" not in h.states[1:]:
            return None
        return h.times[h.states.index("ESTABLISHED", 1) - 1]
    c, s = when("client"), when("server")
    synack = next(iter(rec.segments(PORT, src="server", flags="S.")), None)
    holds = c is not None and s is not None and c < s and synack is not None and c >= synack.t - 0.001
    return verdict_if(holds, f"the SYN+ACK crossed at {_ms(synack.t if synack else None)}, the client was "
                             f"ESTABLISHED at {_ms(c)}, the server at {_ms(s)}")


@pytest.mark.claim(client_path_matches)
@pytest.mark.claim(server_path_matches)
@pytest.mark.claim(client_established_first)
def test_client_and_server_state_paths(lab, family):
    """Every state of a client that closes first and of its server, from the trace and from ss where the trace stops."""
    srv, conn, cli = lab.establish(PORT)
    t = cli.close().t0
    lab.next_segment("server", t, "the server's answer to the client's FIN", port=PORT)
    lab.wait_ss("client", lambda s: s.find(state="FIN-WAIT-2"), timeout=1, required=False, what="half closed")
    conn.recv(100, timeout=2, check=False)
    t = conn.close().t0
    lab.next_segment("client", t, "the client's answer to the server's FIN", port=PORT)
    lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT"), timeout=1, required=False, what="after the close")
    lab.wait_ss("server", only_listener, timeout=1, required=False, what="the server after the close")
    srv.close()
    lab.wait_ss("server", lambda s: not s.rows, timeout=1, required=False, what="the listener gone")


# -- ROLES -------------------------------------------------------------------------------------

CLIENT_ONLY = {"SYN_SENT", "FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT"}
SERVER_ONLY = {"LISTEN", "SYN_RECV", "CLOSE_WAIT", "LAST_ACK"}


def states_seen(rec: CaseRecord, role: str) -> set:
    """Every state host `role`'s sockets were seen in, by the trace or by ss."""
    seen = {s for h in rec.histories(role, PORT) for s in h.states}
    seen |= {KERNEL_FOR_SS.get(r.state, r.state) for snap in rec.snapshots(role) for r in snap.rows}
    return seen


@judge("ROLES", claims=[58, 59],
       text="SYN_SENT, FIN_WAIT_1/2, CLOSING and TIME_WAIT are client-only states; LISTEN, SYN_RCVD, CLOSE_WAIT "
            "and LAST_ACK are server-only states")
def states_belong_to_roles(rec: CaseRecord) -> Verdict:
    server, client = states_seen(rec, "server"), states_seen(rec, "client")
    wrong = sorted(server & CLIENT_ONLY) + sorted(client & SERVER_ONLY)
    return verdict_if(not wrong, f"the server (which closed first) was seen in {', '.join(sorted(server))}; the "
                                 f"client in {', '.join(sorted(client))}: {', '.join(wrong) or 'no state'} on the "
                                 f"'wrong' side")


@judge("ROLES", claims=[51],
       text="the side that closes first is the active closer (FIN_WAIT, TIME_WAIT), the other the passive closer "
            "(CLOSE_WAIT, LAST_ACK), whichever is client or server")
def first_closer_is_active(rec: CaseRecord) -> Verdict:
    first = close_segments(rec)[:1]
    closer = first[0].src if first else None
    other = {"client": "server", "server": "client"}.get(closer)
    active = closer and {"FIN_WAIT1", "TIME_WAIT"} <= states_seen(rec, closer) | {"FIN_WAIT1"} and \
        "TIME_WAIT" in states_seen(rec, closer)
    passive = other and {"CLOSE_WAIT", "LAST_ACK"} <= states_seen(rec, other)
    return verdict_if(bool(active and passive), f"the first FIN came from the {closer or 'nobody'}, which went "
                                                f"{', '.join(sorted(states_seen(rec, closer) & CLIENT_ONLY)) if closer else '-'}"
                                                f"; the {other or '-'} went "
                                                f"{', '.join(sorted(states_seen(rec, other) & SERVER_ONLY)) if other else '-'}")


@pytest.mark.claim(states_belong_to_roles)
@pytest.mark.claim(first_closer_is_active)
def test_server_that_closes_first_ends_in_time_wait(lab, family):
    """The server closes first: the server passes FIN_WAIT into TIME-WAIT, the client CLOSE_WAIT and LAST_ACK."""
    srv, conn, cli = lab.establish(PORT)
    close_both(lab, conn, cli, "server", "client")
    lab.wait_ss("server", lambda s: s.find(state="TIME-WAIT"), timeout=1, required=False, what="after the close")
    lab.wait_ss("client", lambda s: not s.rows, timeout=1, required=False, what="the client after the close")


# -- TIMEWAIT-LEN -------------------------------------------------------------------------------

def time_wait_length(rec: CaseRecord):
    """(low, high, the TIME-WAIT row) from the ss reading just after the four-way close, or Nones."""
    final = acked_by(rec, fin_of(rec, "server"))
    snap = rec.snapshot("client", "after the four-way close")
    rows = [r for r in snap.rows if r.state == "TIME-WAIT" and r.timer is not None and r.timer.name == "timewait"]
    if final is None or not rows:
        return None, None, None
    low, high = timer_length(rows[0], snap, final.t)
    return low, high, rows[0]


@judge("TIMEWAIT-LEN", claims=[56, 93],
       text="TIME_WAIT lasts 2MSL (a fixed time, twice the maximum segment lifetime) before CLOSED")
def time_wait_lasts_2msl(rec: CaseRecord) -> Verdict:
    gone = rec.facts.get("time_wait_gone")          # the slow variant waits it out
    if gone and None not in gone:
        low, high = gone
        how = f"the TIME-WAIT entry went away {low:.2f} to {high:.2f} s after the final ACK (ss polled every 50 ms)"
    else:
        low, high, row = time_wait_length(rec)
        how = (f"ss showed the timer {row.timer.remaining:g} s left just after entry: the kernel gave TIME-WAIT "
               f"{low:.1f} to {high:.1f} s" if row else "no TIME-WAIT entry with a timewait timer after the close")
    holds = low is not None and high - low < 2.5 and low > 1
    implied = f"; that is 2MSL for an MSL of {low / 2:.1f}-{high / 2:.1f} s (RFC 9293 suggests an MSL of " \
              f"{RFC9293_MSL:.0f} s, the articles name none)" if holds else ""
    return verdict_if(holds, how + implied)


@pytest.mark.claim(time_wait_lasts_2msl)
def test_time_wait_timer_at_entry(lab, family):
    """Just after the four-way close, ss shows the TIME-WAIT timer the kernel started: how long it runs."""
    four_way_close(lab)


@pytest.mark.slow
@pytest.mark.claim(time_wait_lasts_2msl)
def test_time_wait_full_length(lab, family):
    """Wait out the client's TIME-WAIT (deadline 70 s) and measure from entry to the entry's disappearance."""
    four_way_close(lab)
    final = lab.wait_segment(match("client", ".", seq=7, ack=2), what="the client's final ACK")
    low, high = lab.wait_gone("client", lambda s: s.find(state="TIME-WAIT"), final.time, timeout=70, interval=0.05,
                              what="the client's TIME-WAIT entry gone")
    lab.observe("time_wait_gone", [None if t is None else round(t, 3) for t in (low, high)])


# -- KILL-SERVER, EXIT-CLOSE ----------------------------------------------------------------------

def closes_with_fin(rec: CaseRecord, who: str, how: str) -> Verdict:
    segs = [s for s in rec.segments(PORT, src=who) if s.has("F") or s.has("R")]
    fins = [s for s in segs if s.has("F")]
    rsts = [s for s in segs if s.has("R")]
    other = "client" if who == "server" else "server"
    eof = rec.calls_of("recv", role=other)
    got = eof[-1].result() if eof else "no recv() call"
    hist = rec.history(who, PORT)
    return verdict_if(len(fins) == 1 and not rsts and bool(eof) and eof[-1].ret == "",
                      f"after {how} the {who}'s kernel sent {len(fins)} FIN and {len(rsts)} RST; the {other}'s "
                      f"recv() returned {got}; the {who}'s socket went {hist.text() if hist else '(no trace)'}")


@judge("KILL-SERVER", claims=[104],
       text="a killed server closes its connections like a normal close: the kernel sends FIN")
def killed_server_sends_fin(rec: CaseRecord) -> Verdict:
    return closes_with_fin(rec, "server", "SIGKILL")


@judge("EXIT-CLOSE", claims=[115],
       text="when a process exits (or is killed) the kernel closes its sockets and starts the close with FIN")
def exit_sends_fin(rec: CaseRecord) -> Verdict:
    who = "client" if rec.calls_of("exit", role="client") else "server"
    return closes_with_fin(rec, who, "exit()" if who == "client" else "SIGKILL")


@pytest.mark.claim(killed_server_sends_fin)
@pytest.mark.claim(exit_sends_fin)
def test_killed_server_sends_fin(lab, family):
    """SIGKILL the server with an idle connection: what its kernel sends, what the client's recv() gets."""
    srv, conn, cli = lab.establish(PORT)
    t = lab.server.kill(signal.SIGKILL).t0
    lab.next_segment("server", t, "what the killed server's kernel sends", port=PORT)
    cli.recv(100, timeout=2, check=False)
    lab.wait_segment(match("client", ".", ack=2, port=PORT), timeout=2, required=False,
                     what="the client's ACK of the FIN (at once or by its delayed-ACK timer)")
    lab.ss("after the kill")
    t = cli.close().t0
    lab.next_segment("server", t, "the server kernel's answer to the client's close", port=PORT)


@pytest.mark.claim(exit_sends_fin)
def test_exit_without_close_sends_fin(lab, family):
    """The client exits without close(): what its kernel sends; the server reads and closes."""
    srv, conn, cli = lab.establish(PORT)
    t = lab.client.exit(0).t0
    lab.next_segment("client", t, "what the exited client's kernel sends", port=PORT)
    conn.recv(100, timeout=2, check=False)
    lab.wait_segment(match("server", ".", ack=2, port=PORT), timeout=2, required=False,
                     what="the server's ACK of the FIN (at once or by its delayed-ACK timer)")
    lab.ss("after exit")
    t = conn.close().t0
    lab.next_segment("client", t, "the client kernel's answer to the server's close", port=PORT)


# -- KILL-UNREAD (an observation: article 004 makes no claim about it) -----------------------------

@pytest.mark.experiment("KILL-UNREAD")
@pytest.mark.parametrize("how", ["close", "exit"])
def test_close_with_unread_data_resets(lab, family, how):
    """The server closes (or exits) with 5 unread bytes: what it sends, and what the client's recv() gets."""
    srv, conn, cli = lab.establish(PORT)
    t = cli.send("hello").t0
    lab.next_segment("server", t, "the server's ACK of the data", port=PORT)
    t = (conn.close() if how == "close" else lab.server.exit(0)).t0
    lab.next_segment("server", t, f"what the server's kernel sends on {how}", port=PORT)
    cli.recv(100, timeout=2, check=False)
    cli.recv(100, timeout=2, check=False)
    lab.ss("after the close")


# -- REFCOUNT ----------------------------------------------------------------------------------

@judge("REFCOUNT", claims=[105, 113],
       text="close() only drops a reference to the socket; the FIN goes out when the last descriptor is closed")
def fin_on_last_close(rec: CaseRecord) -> Verdict:
    closes = rec.calls_of("close", role="server")
    first, last = closes[-2:] if len(closes) >= 2 else (None, None)
    fins = rec.segments(PORT, src="server", flags="F")
    early = [f for f in fins if first is not None and last is not None and first.t0 <= f.t < last.t0]
    after = [f for f in fins if last is not None and f.t >= last.t0]
    sent = rec.calls_of("send", role="server")
    through_other = bool(sent) and sent[-1].ok and first is not None and sent[-1].t0 > first.t0
    holds = first is not None and not early and len(after) == 1 and through_other
    via = "fork" if rec.calls_of("fork") else "dup"
    return verdict_if(holds, f"closing one of two descriptors ({via}) sent {len(early)} FIN and the socket "
                             f"{'kept sending through the other' if through_other else 'could not send through the other'}"
                             f"; closing the last sent {len(after)} FIN")


@pytest.mark.claim(fin_on_last_close)
@pytest.mark.parametrize("via", ["dup", "fork"])
def test_fin_only_on_last_close(lab, family, via):
    """The server's connection has two descriptors (dup, or fork): closing one, then the other."""
    srv, conn, cli = lab.establish(PORT)
    other = conn.dup() if via == "dup" else lab.server.fork().sock(conn.fd)
    conn.close()
    t = other.send("ping", check=False).t0
    cli.recv(100, timeout=2, check=False)
    lab.next_segment("client", t, "the client's ACK of the data", port=PORT)
    lab.ss("one descriptor left")
    t = other.close().t0
    lab.next_segment("server", t - 0.0001, "what the server sends on the last close", timeout=1, port=PORT)
    lab.next_segment("client", t, "the client's answer to the last close", port=PORT)


# -- FD-LEAK -----------------------------------------------------------------------------------

@judge("FD-LEAK", claims=[106],
       text="a server that never closes its descriptors ends up with 'too many open files'")
def descriptors_run_out(rec: CaseRecord) -> Verdict:
    accepts = rec.calls_of("accept", role="server")
    sockets = rec.calls_of("socket", role="server")[1:]
    emfile = [c for c in accepts + sockets if c.errno == "EMFILE"]
    limit = rec.call("setrlimit", role="server").args.get("soft")
    connects = rec.calls_of("connect", role="client")
    return verdict_if(len(emfile) >= 2, f"with RLIMIT_NOFILE {limit}, {sum(1 for c in accepts if c.ok)} connections "
                                        f"were accepted, then accept() gave {accepts[-1].result() if accepts else '-'} "
                                        f"and socket() {sockets[-1].result() if sockets else '-'}; "
                                        f"{sum(1 for c in connects if c.ok)} of {len(connects)} clients' connect() "
                                        f"succeeded")


@pytest.mark.claim(descriptors_run_out)
def test_descriptor_leak_hits_emfile(lab, family):
    """A server with 3 descriptors to spare never closes: what accept() and socket() return; what clients see."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(16)
    limit = srv.fd + 3                  # the listener and two connections fit below the limit
    lab.server.setrlimit("NOFILE", limit)
    for n in range(1, 4):
        lab.client.socket().connect(lab.hosts.server, PORT, check=False, timeout=5)
        lab.wait_ss("server", lambda s: s.find(state="LISTEN") and s.find(state="LISTEN")[0].recv_q >= 1,
                    timeout=2, required=False, what=f"connection {n} in the accept queue")
        accepted = srv.accept(check=False, timeout=2)
        if getattr(accepted, "errno", None):       # a failed accept() is a Call, a successful one a Socket
            break
    lab.server.call("socket", {"family": family, "type": "stream"}, check=False)
    lab.ss("after the descriptors ran out")


# -- LINGER0 -----------------------------------------------------------------------------------

@judge("LINGER0", claims=[39], text="RST is another way to close a connection")
def rst_closes(rec: CaseRecord) -> Verdict:
    segs = [s for s in rec.segments(PORT, src="client") if s.has("R") or s.has("F")]
    rsts = [s for s in segs if s.has("R")]
    fins = [s for s in segs if s.has("F")]
    snap = rec.snapshots(label="after the reset")
    left = [r.state for sn in snap for r in sn.rows if r.state != "LISTEN"]
    reset = rec.calls_of("recv", role="server")
    got = reset[-1].result() if reset else "no recv() call"
    hists = [h.text() for h in rec.histories(port=PORT, listener=False)]
    closed = all(h.endswith("CLOSE") for h in hists) and bool(hists)
    return verdict_if(len(rsts) == 1 and not fins and not left and closed,
                      f"close() with SO_LINGER (1, 0) sent {len(rsts)} RST and {len(fins)} FIN; afterwards ss shows "
                      f"{left or 'no connection'} on either side; sockets went {'; '.join(hists) or '(none)'}; the "
                      f"server's recv() returned {got}")


@pytest.mark.claim(rst_closes)
def test_linger_zero_close_sends_rst(lab, family):
    """SO_LINGER (1, 0) then close(): what the client sends, what is left, what the server's recv() gets."""
    srv, conn, cli = lab.establish(PORT)
    cli.setsockopt("SO_LINGER", (1, 0))
    t = cli.close().t0
    lab.next_segment("client", t - 0.0001, "what the client sends on close()", port=PORT)
    conn.recv(100, timeout=2, check=False)
    lab.ss("after the reset")
