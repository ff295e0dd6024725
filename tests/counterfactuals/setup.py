"""Counterfactuals of cases/test_setup.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import add_segment, drop_segments, set_errno, set_history, set_ret, set_states


def _listener_queue(rec, n):
    rec.snapshot("server", "after connect").find(state="LISTEN")[0].recv_q = n


FLIPS = [
    Flip("CONN-NOLISTEN:refused_without_listen", "CONN-NOLISTEN.json",
         lambda r: (drop_segments(r, lambda s: s.src == "server"), set_errno(r, "connect", "ETIMEDOUT", role="client")),
         "refuted", "the server's kernel stays silent and connect() times out"),
    Flip("CONN-NOLISTEN:refused_without_listen", "CONN-NOLISTEN.json",
         lambda r: set_states(r, "server", "after connect", ["SYN-RECV"]),
         "refuted", "a connection is left on the server"),
    Flip("CONN-NOACCEPT:handshake_without_accept", "CONN-NOACCEPT.json",
         lambda r: (set_errno(r, "connect", "ETIMEDOUT", role="client"),
                    set_states(r, "client", "after connect", ["SYN-SENT"])),
         "refuted", "the handshake does not complete without accept()"),
    Flip("CONN-NOACCEPT:handshake_without_accept", "CONN-NOACCEPT.json", lambda r: _listener_queue(r, 0),
         "refuted", "nothing waits in the accept queue"),
    Flip("CONN-DATA:data_both_ways", "CONN-DATA.json", lambda r: set_errno(r, "recv", "ECONNRESET", role="client"),
         "refuted", "the client's recv() fails instead of getting the server's data"),
    Flip("CONN-DATA:data_both_ways", "CONN-DATA.json", lambda r: set_ret(r, "recv", "", role="server"),
         "refuted", "the server reads EOF instead of the client's data"),
]


# -- HS-SEQ, HS-ACKDATA, HS-REJECT, HS-MSS, LISTEN-CONNECT -----------------------------------

def _seg(rec, pred):
    return next(s for s in rec.segments_ if pred(s))


def _synack_without_ack(rec):
    s = _seg(rec, lambda s: s.src == "server" and s.flags == "S.")
    s.flags, s.ack = "S", None


def _ack_lost_once(rec):
    """The client's first ACK never arrives: the server retransmits its SYN+ACK before it is ESTABLISHED."""
    synack = _seg(rec, lambda s: s.src == "server" and s.flags == "S.")
    add_segment(rec, synack, src="server", dst="client", flags="S.", seq=0, ack=1, sport=synack.sport,
                dport=synack.dport)


def _shift_client_data(rec, by):
    for s in rec.segments(50000, src="client", payload=True):
        s.seq += by


def _listener_syn_sent(rec):
    set_errno(rec, "connect", None, role="server", ret=0)
    add_segment(rec, src="server", dst="client", flags="S", seq=0, sport=50000, dport=50001)
    set_history(rec, "server", ["CLOSE", "LISTEN", "SYN_SENT", "ESTABLISHED"], port=50000, listener=True)


FLIPS += [
    Flip("HS-SEQ:syn_and_syn_sent", "HS-SEQ.json",
         lambda r: set_history(r, "client", ["CLOSE", "ESTABLISHED"], port=50000),
         "refuted", "the client's socket never passes SYN_SENT"),
    Flip("HS-SEQ:syn_and_syn_sent", "HS-SEQ.json",
         lambda r: setattr(_seg(r, lambda s: s.flags == "S"), "len", 1),
         "refuted", "the SYN carries a byte of data"),
    Flip("HS-SEQ:synack_in_one_segment", "HS-SEQ.json", _synack_without_ack,
         "refuted", "the server's SYN carries no ACK (SYN and ACK in separate segments)"),
    Flip("HS-SEQ:synack_in_one_segment", "HS-SEQ.json",
         lambda r: setattr(_seg(r, lambda s: s.flags == "S."), "ack", 0),
         "refuted", "the SYN+ACK acknowledges J, not J+1"),
    Flip("HS-SEQ:three_segments_establish", "HS-SEQ.json", _ack_lost_once,
         "refuted", "a fourth segment comes before the server is ESTABLISHED"),
    Flip("HS-SEQ:three_segments_establish", "HS-SEQ.json",
         lambda r: set_states(r, "server", "after the exchange", ["LISTEN", "SYN-RECV"]),
         "refuted", "the server is still SYN-RECV after the exchange"),
    Flip("HS-ACKDATA:third_segment", "HS-ACKDATA-after-connect.json", lambda r: _shift_client_data(r, 1),
         "refuted", "the bare ACK consumed a sequence number (data starts at 2)"),
    Flip("HS-ACKDATA:third_segment", "HS-ACKDATA-during-handshake.json", lambda r: _shift_client_data(r, 1),
         "refuted", "the data on the third segment does not start at J+1"),
    Flip("HS-REJECT:reject_answers_rst", "HS-REJECT.json",
         lambda r: (drop_segments(r, lambda s: s.src == "server" and 50000 in (s.sport, s.dport)),
                    set_errno(r, "connect", "ETIMEDOUT", role="client", n=0)),
         "refuted", "the SYN to a port without listener gets no answer; connect() times out"),
    Flip("HS-MSS:mss_is_mtu_minus_headers", "HS-MSS-mtu1500.json",
         lambda r: _seg(r, lambda s: s.flags == "S").options.__setitem__(0, ["mss", 536]),
         "refuted", "the SYN announces 536, not MTU - 40"),
    Flip("HS-MSS:mss_is_mtu_minus_headers", "HS-MSS-maxseg1000.json",
         lambda r: setattr(_seg(r, lambda s: s.src == "client" and s.len > 0), "len", 1448),
         "refuted", "a data segment exceeds the smaller side's MSS (1000)"),
    Flip("LISTEN-CONNECT:listener_connects", "LISTEN-CONNECT.json", _listener_syn_sent,
         "confirmed", "connect() on the listener succeeds: a SYN leaves, LISTEN -> SYN_SENT"),
]


# -- BACKLOG, HS-REJECT-OVERFLOW, IO-BEFORE-ACCEPT, BACKLOG-ACCEPTING ---------------------------

def _extra_answered(rec):
    port = rec.fact("ports")["extra"]
    syn = _seg(rec, lambda s: s.sport == port and s.flags == "S")
    add_segment(rec, syn, src="server", dst="client", flags="S.", seq=0, ack=1, sport=50000, dport=port)


def _rst_to(rec, port):
    add_segment(rec, src="server", dst="client", flags="R", seq=1, sport=50000, dport=port)


def _served_only(rec, n):
    snap = rec.snapshot("server", "all clients accepted")
    estab = [row for row in snap.rows if row.state == "ESTAB"]
    snap.rows = [row for row in snap.rows if row.state != "ESTAB"] + estab[:n]


FLIPS += [
    Flip("BACKLOG:queue_bounds_connections", "BACKLOG-default.json", _extra_answered,
         "refuted", "the client beyond the backlog gets a SYN+ACK"),
    Flip("BACKLOG:queue_bounds_connections", "BACKLOG-abort_on_overflow.json",
         lambda r: setattr(r.snapshot("server", "accept queue full").find(state="LISTEN")[0], "recv_q", 4),
         "refuted", "the accept queue holds more than backlog + 1"),
    Flip("HS-REJECT-OVERFLOW:listener_rejects_with_rst", "HS-REJECT-OVERFLOW.json", lambda r: _rst_to(r, 50012),
         "confirmed", "the full listener answers RST by default too"),
    Flip("HS-REJECT-OVERFLOW:listener_rejects_with_rst", "HS-REJECT-OVERFLOW.json",
         lambda r: drop_segments(r, lambda s: s.has("R")),
         "refuted", "no RST either way: tcp_abort_on_overflow=1 drops silently too"),
    Flip("IO-BEFORE-ACCEPT:io_before_accept", "IO-BEFORE-ACCEPT.json",
         lambda r: (drop_segments(r, lambda s: s.src == "server" and (s.ack or 0) > 1
                                  and s.t < r.call("accept", role="server").t0),
                    set_errno(r, "send", "EAGAIN", role="client")),
         "confirmed", "nothing is sent or acknowledged before accept()"),
    Flip("BACKLOG-ACCEPTING:backlog_is_no_connection_limit", "BACKLOG-ACCEPTING.json", lambda r: _served_only(r, 3),
         "confirmed", "only backlog + 1 connections are ever established although accept() runs"),
]
