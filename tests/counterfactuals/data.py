"""Counterfactuals of cases/test_data.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import add_segment, drop_segments, set_errno, set_ret, set_states

PORT = 50000


def _never_resent(rec):
    """The lost segment is never sent again; the read times out."""
    lost = next(s for s in rec.segments(PORT, src="client", payload=True) if s.dropped_by)
    drop_segments(rec, lambda s: s.src == "client" and s.len and not s.dropped_by and s.seq == lost.seq)
    set_errno(rec, "recv", "EAGAIN", role="server")


def _resent_other_bytes(rec):
    """The retransmission arrives, but the receiver reads something else."""
    set_ret(rec, "recv", "hellx", role="server")


def _exact_rst_ignored(rec):
    """The RST at rcv_nxt is ignored like the others: the connection lives on."""
    set_ret(rec, "recv", "", role="server", n=-1)
    set_states(rec, "server", "after the exact RST", ["LISTEN", "ESTAB"])


def _outside_rst_obeyed(rec):
    """The RST far outside the window resets the connection (a kernel that checks nothing)."""
    rst = next(s for s in rec.segments(PORT, src="client", flags="R") if s.seq == rec.fact("rst seq")["outside"])
    add_segment(rec, after=rst, t=rst.t + 0.0001, src="server", dst="client", flags="R", seq=rst.ack or 0,
                sport=PORT, dport=rst.sport)
    set_states(rec, "server", "after the outside RST", ["LISTEN"])


FLIPS = [
    Flip("DATA-RETRANS:lost_data_arrives", "DATA-RETRANS.json", _never_resent,
         "refuted", "the lost data segment is never retransmitted"),
    Flip("DATA-RETRANS:lost_data_arrives", "DATA-RETRANS.json", _resent_other_bytes,
         "refuted", "the data does not arrive intact"),
    Flip("RST-VALIDATE:rst_judged", "RST-VALIDATE.json", _exact_rst_ignored,
         "refuted", "the RST at the next expected sequence number does not abort"),
    Flip("RST-VALIDATE:rst_judged", "RST-VALIDATE.json", _outside_rst_obeyed,
         "refuted", "an RST outside the window resets the connection"),
]
