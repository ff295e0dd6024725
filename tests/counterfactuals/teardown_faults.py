"""Counterfactuals of cases/test_teardown_faults.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import remove_rows, set_counter, set_flags, set_history


def _ack_not_delayed(rec):
    """The server's kernel ACKs the FIN after data without its delayed-ACK timer."""
    before = rec.counter("server", "data: before close", "DelayedACKs")
    set_counter(rec, "server", "data: after close", "DelayedACKs", before)
    port = rec.fact("client ports")["data"]
    fin = rec.segments(port, src="client", flags="F")[0]
    for s in rec.segments(port, src="server"):
        if s.t > fin.t and s.pure_ack:
            s.t = fin.t + 0.0002                          # and at once
            break


def _fw1_left_without_ack(rec):
    """The socket was already FIN-WAIT-2 while every ACK was dropped."""
    port = rec.fact("client ports")["held"]
    for row in rec.snapshot("client", "FIN-WAIT-1 while the ACKs are dropped").find(local_port=port):
        row.state = "FIN-WAIT-2"


def _no_closing(rec):
    port = rec.fact("client port")
    set_history(rec, "server", ["LISTEN", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"], port=port)


def _closing_gone_while_held(rec):
    """The server had left CLOSING while its own FIN was still held."""
    snap = rec.snapshot("server", "the server's CLOSING")
    for row in snap.rows:
        if row.state == "CLOSING":
            row.state = "TIME-WAIT"


def _reack_is_rst(rec):
    """The client no longer has the connection: the retransmitted FIN gets an RST."""
    port = rec.fact("client port")
    lost = [s for s in rec.segments(port, src="client", dropped=True)]
    return set_flags(rec, lambda s: s.src == "client" and port in (s.sport, s.dport) and lost and s.t > lost[0].t,
                     "R")


FLIPS = [
    Flip("FINWAIT1-SEEN:peer_acks_at_once", "FINWAIT1-SEEN.json", _ack_not_delayed,
         "confirmed", "the peer ACKs the FIN after data at once, not by its delayed-ACK timer"),
    Flip("FINWAIT1-SEEN:fin_wait_1_waits_for_ack", "FINWAIT1-SEEN.json", _fw1_left_without_ack,
         "refuted", "the socket leaves FIN-WAIT-1 without the ACK of its FIN"),
    Flip("SIM-CLOSE:crossing_fins_closing", "SIM-CLOSE.json", _no_closing,
         "refuted", "the server goes FIN_WAIT1 -> FIN_WAIT2, never CLOSING"),
    Flip("SIM-CLOSE:closing_waits_for_ack", "SIM-CLOSE.json", _closing_gone_while_held,
         "refuted", "CLOSING ends before the ACK of the own FIN"),
    Flip("SIM-CLOSE:closing_waits_for_ack", "SIM-CLOSE.json",
         lambda r: remove_rows(r, "TIME-WAIT", role="client", label="client TIME-WAIT"),
         "refuted", "no TIME-WAIT after CLOSING"),
    # Recorded on Debian's 7.3 under TCG, where the timewait probes show CLOSING -> TIME_WAIT (no
    # tracepoint CLOSE): the judge reads the socket leaving CLOSING from either.
    Flip("SIM-CLOSE:closing_waits_for_ack", "SIM-CLOSE-kprobe.json", _closing_gone_while_held,
         "refuted", "CLOSING ends before the ACK of the own FIN (timewait probes' history)"),
    Flip("TIMEWAIT-ACK:last_ack_resends_time_wait_reacks", "TIMEWAIT-ACK.json", _reack_is_rst,
         "refuted", "the retransmitted FIN is answered with RST instead of the lost ACK"),
    Flip("TIMEWAIT-ACK:time_wait_outlasts_the_lost_ack", "TIMEWAIT-ACK.json", _reack_is_rst,
         "refuted", "no TIME_WAIT to re-send the ACK: the peer gets an RST"),
    Flip("TIMEWAIT-ACK:time_wait_outlasts_the_lost_ack", "TIMEWAIT-ACK.json",
         lambda r: remove_rows(r, "TIME-WAIT", role="client", label="after LAST_ACK closed"),
         "refuted", "the client's TIME-WAIT ended before the peer's LAST_ACK did"),
]
