"""Counterfactuals of cases/test_setup.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import drop_segments, remove_rows, set_errno, set_flags, set_ret, set_states


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
