"""Counterfactuals of cases/test_injected.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import add_segment, remove_rows

PEER_PORT = 20000


def _link_mss_segments(rec):
    for s in rec.segments(PEER_PORT, src="server", payload=True):
        s.len = 1448


def _split_fin_ack(rec, port):
    """The passive side answers the client's FIN with a bare ACK, then its FIN."""
    fin = next(s for s in rec.segments(port, src="server", flags="F"))
    fin.t += 0.040
    add_segment(rec, next(s for s in rec.segments(port, src="client", flags="F")), src="server", dst="client",
                flags=".", seq=fin.seq, ack=fin.ack, sport=fin.sport, dport=fin.dport, t=fin.t - 0.040)


def _merge_fin_ack(rec, port):
    """The passive side answers the client's FIN with one FIN+ACK."""
    ack = next(s for s in rec.segments(port, src="server") if s.flags == "." and s.ack == 7)
    rec.segments_.remove(ack)


def _fin_wait_2_seen(rec):
    snap = rec.snapshot("server", "the server's TIME-WAIT")
    for row in snap.rows:
        if row.state == "TIME-WAIT":
            row.state = "FIN-WAIT-2"


FLIPS = [
    Flip("HS-MSS-DEFAULT:default_mss_without_option", "HS-MSS-DEFAULT.json", _link_mss_segments,
         "refuted", "the server sends link-MSS segments to a peer that announced no MSS"),
    Flip("SYNRCVD-RST:rst_returns_to_listen", "SYNRCVD-RST.json",
         lambda r: r.call("accept", role="server").ret.__setitem__("peer", ["x", PEER_PORT]),
         "refuted", "the reset request reached the accept queue: accept() returns it first"),
    Flip("SYNRCVD-RST:rst_returns_to_listen", "SYNRCVD-RST.json",
         lambda r: remove_rows(r, "SYN-RECV", role="server", label="the request in SYN-RECV"),
         "refuted", "no request was in SYN-RECV to return from"),
    Flip("CLOSE-3WAY:ack_and_fin_apart", "CLOSE-3WAY-001.json", lambda r: _split_fin_ack(r, 50000),
         "confirmed", "even the application that closes at once sends ACK and FIN apart"),
    Flip("CLOSE-3WAY:ack_and_fin_apart", "CLOSE-3WAY-001.json", lambda r: _merge_fin_ack(r, 50001),
         "refuted", "ACK and FIN travel together whenever the application closes"),
    Flip("CLOSE-3WAY:fin_ack_to_time_wait", "CLOSE-3WAY-002.json",
         lambda r: remove_rows(r, "TIME-WAIT", role="server"),
         "refuted", "no TIME-WAIT after the FIN+ACK"),
    Flip("CLOSE-3WAY:fin_ack_to_time_wait", "CLOSE-3WAY-002.json", _fin_wait_2_seen,
         "refuted", "ss shows FIN-WAIT-2 after the FIN+ACK"),
]
