"""Counterfactuals of cases/test_halfclose.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import add_segment, drop_segments, remove_rows, set_errno, set_flags, set_ret

PORT = 50000


def _port(rec, which):
    return rec.fact("client ports")[which]


def _no_ack_of_first_fin(rec):
    """The server's kernel never ACKs the first client's FIN on its own: only its later FIN carries the ACK."""
    p = _port(rec, "default")
    return drop_segments(rec, lambda s: s.src == "server" and p in (s.sport, s.dport) and s.pure_ack)


def _no_timewait_timer(rec):
    """The orphaned FIN-WAIT-2 has no timer: a kernel that keeps it for good."""
    for snap in rec.snapshots("client", "first client FIN-WAIT-2"):
        for row in snap.rows:
            row.timer = None


def _never_gone(rec):
    """The short-timeout FIN-WAIT-2 entry is still there when the poll gives up."""
    seen, _ = rec.fact("short entry seen until / gone by")
    rec.facts["short entry seen until / gone by"] = [rec.duration, None]


def _server_fin_before_close(rec):
    """No server FIN on the first connection at all (close() did not send one)."""
    p = _port(rec, "default")
    return drop_segments(rec, lambda s: s.src == "server" and p in (s.sport, s.dport) and s.has("F"))


def _shut_rd_sends_fin(rec):
    """shutdown(SHUT_RD) puts a FIN on the wire."""
    shut = rec.call("shutdown", role="client")
    syn = rec.segments(PORT, src="client", flags="S")[0]
    before = [s for s in rec.segments_ if s.t <= shut.t0]
    add_segment(rec, after=before[-1] if before else None, t=shut.t0 + 0.0001, src="client", dst="server",
                flags="F.", seq=1, ack=1, sport=syn.sport, dport=PORT)


def _unsent_discarded(rec):
    """The server reads nothing after the shutdown: the unsent data was thrown away."""
    shut = rec.call("shutdown", role="client")
    for c in rec.calls_of("recv", role="server"):
        if c.t0 >= shut.t0:
            c.ret, c.errno, c.error = "", None, None


FLIPS = [
    Flip("HALFCLOSE-NOCLOSE:fin_wait_2_and_close_wait", "HALFCLOSE-NOCLOSE.json", _no_ack_of_first_fin,
         "refuted", "the server's kernel does not ACK the client's FIN"),
    Flip("HALFCLOSE-NOCLOSE:fin_wait_2_and_close_wait", "HALFCLOSE-NOCLOSE.json",
         lambda r: remove_rows(r, "CLOSE-WAIT", role="server", label="both clients closed"),
         "refuted", "the server's sockets are not in CLOSE-WAIT after the client's FIN"),
    Flip("HALFCLOSE-NOCLOSE:fin_wait_2_goes_after_fin_timeout", "HALFCLOSE-NOCLOSE.json", _never_gone,
         "refuted", "the FIN-WAIT-2 entry outlives the shortened tcp_fin_timeout"),
    Flip("HALFCLOSE-NOCLOSE:fin_wait_2_goes_after_fin_timeout", "HALFCLOSE-NOCLOSE.json", _no_timewait_timer,
         "refuted", "the orphaned FIN-WAIT-2 has no tcp_fin_timeout timer"),
    Flip("HALFCLOSE-NOCLOSE:close_wait_stays", "HALFCLOSE-NOCLOSE.json",
         lambda r: remove_rows(r, "CLOSE-WAIT", role="server", label="after the shortened"),
         "refuted", "the server's CLOSE-WAIT sockets go away without the application's close"),
    Flip("HALFCLOSE-NOCLOSE:tcp_acks_the_fin", "HALFCLOSE-NOCLOSE.json", _no_ack_of_first_fin,
         "refuted", "the FIN is acknowledged only once the application acts (with its FIN)"),
    Flip("HALFCLOSE-NOCLOSE:close_wait_then_close_sends_fin", "HALFCLOSE-NOCLOSE.json", _server_fin_before_close,
         "refuted", "close() in CLOSE-WAIT sends no FIN"),
    Flip("HALFCLOSE-NOCLOSE:sends_after_fin", "HALFCLOSE-NOCLOSE.json",
         lambda r: set_errno(r, "send", "EPIPE", role="server", n=0),
         "refuted", "send() fails once the peer's FIN arrived"),
    Flip("HALFCLOSE-DATA:fin_wait_2_receives", "HALFCLOSE-DATA.json",
         lambda r: set_ret(r, "recv", "", role="client", n=0),
         "refuted", "the half-closed client reads EOF instead of the server's data"),
    Flip("HALFCLOSE-DATA:sender_after_fin", "HALFCLOSE-DATA.json",
         lambda r: set_errno(r, "send", "EPIPE", role="server"),
         "refuted", "the server cannot send after the client's FIN"),
    Flip("HALFCLOSE-DATA:each_direction_own_fin", "HALFCLOSE-DATA.json",
         lambda r: set_flags(r, lambda s: s.src == "server" and s.has("F"), "R."),
         "refuted", "the server's direction ends with an RST, not a FIN"),
    Flip("SHUT-RD:shut_rd_sends_nothing", "SHUT-RD.json", _shut_rd_sends_fin,
         "refuted", "shutdown(SHUT_RD) sends a FIN"),
    Flip("SHUT-RD:shut_rd_discards", "SHUT-RD.json",
         lambda r: (set_ret(r, "recv", "", role="client", n=1), set_ret(r, "recv", "", role="client", n=2)),
         "confirmed", "the data sent after SHUT_RD never reaches recv()"),
    Flip("SHUT-WR:shutdown_sends_fin_then_time_wait", "SHUT-WR.json",
         lambda r: remove_rows(r, "TIME-WAIT", role="client", label="after the server's close"),
         "refuted", "the client does not end in TIME-WAIT"),
    Flip("SHUT-WR:shutdown_sends_fin_then_time_wait", "SHUT-WR.json",
         lambda r: drop_segments(r, lambda s: s.src == "client" and s.has("F")),
         "refuted", "shutdown() sends no FIN"),
    Flip("SHUT-WR-QUEUED:shut_wr_discards_unsent", "SHUT-WR-QUEUED.json", _unsent_discarded,
         "confirmed", "the data still unsent at shutdown() is never delivered"),
]
