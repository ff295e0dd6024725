"""Counterfactuals of cases/test_write_shutdown.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import drop_segments, remove_rows, set_history, set_ret

PORT = 50000


def _fin_wait_1_sends(rec):
    """send() in FIN-WAIT-1 succeeds (and the data goes out)."""
    call = set_ret(rec, "send", 13, role="client", n=0)
    port = rec.segments(PORT, src="client", flags="S")[0].sport
    from tests.counterfactuals.edits import add_segment
    add_segment(rec, t=call.t1, src="client", dst="server", flags="P.", seq=2, len=13, ack=1, sport=port, dport=PORT)


def _shutdown_sends_no_fin(rec):
    """shutdown(SHUT_WR) in CLOSE-WAIT sends nothing; the socket stays CLOSE_WAIT."""
    port = rec.fact("client ports")["shutdown"]
    drop_segments(rec, lambda s: s.src == "server" and port in (s.sport, s.dport) and s.has("F"))
    set_history(rec, "server", ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"], port=port)


def _unacked_dropped(rec):
    """After shutdown() the data is never sent again: the server reads EOF only... or nothing."""
    shut = rec.call("shutdown", role="client")
    drop_segments(rec, lambda s: s.src == "client" and s.len > 0 and s.t >= shut.t0)
    for c in rec.calls_of("recv", role="server"):
        c.ret, c.errno, c.error = None, "EAGAIN", None


FLIPS = [
    Flip("FINWAIT2-SEND:no_send_after_shut_wr", "FINWAIT2-SEND.json", _fin_wait_1_sends,
         "refuted", "send() in FIN-WAIT-1 succeeds and data goes out"),
    Flip("FINWAIT2-SEND:no_send_after_shut_wr", "FINWAIT2-SEND.json",
         lambda r: set_ret(r, "send", 13, role="client", n=1),
         "refuted", "send() in FIN-WAIT-2 succeeds"),
    Flip("FINWAIT2-HELD:held_until_close", "FINWAIT2-HELD.json",
         lambda r: remove_rows(r, "FIN-WAIT-2", role="client", label="long past tcp_fin_timeout"),
         "refuted", "FIN-WAIT-2 ends after tcp_fin_timeout although the descriptor is open"),
    Flip("FINWAIT2-HELD:held_until_close", "FINWAIT2-HELD.json",
         lambda r: remove_rows(r, "CLOSE-WAIT", role="server", label="after close and tcp_fin_timeout"),
         "refuted", "the server's CLOSE-WAIT goes away without its close()"),
    Flip("CLOSEWAIT-FIN:only_close_sends_fin", "CLOSEWAIT-FIN.json", _shutdown_sends_no_fin,
         "confirmed", "shutdown(SHUT_WR) in CLOSE-WAIT sends no FIN; only close does"),
    Flip("SHUT-WR-UNACKED:shut_wr_stops_retransmitting", "SHUT-WR-UNACKED.json", _unacked_dropped,
         "confirmed", "the unacknowledged data is not retransmitted after shutdown()"),
]
