"""Counterfactuals of cases/test_routed.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import set_info, set_option

PORT = 50000


def _default_mss_through_the_router(rec):
    """An old BSD-style kernel: 536 for a peer that is not on the link, the data cut to fit."""
    set_option(rec, lambda s: PORT in (s.sport, s.dport) and "S" in s.flags, "mss", 536)
    for s in rec.segments(PORT, payload=True):
        s.len = min(s.len, 524)
    set_info(rec, "mss", 524, role="client", label="after the writes")


def _no_shrink(rec):
    """No path MTU discovery: the client goes on sending full-size segments."""
    data = rec.segments(PORT, src="client", payload=True)
    full = max(s.len for s in data)
    for s in data:
        if s.len < full and s is not data[-1]:
            s.len = full


def _data_lost(rec):
    rec.call("recv", role="server").ret = "x" * 2896


FLIPS = [
    Flip("HS-MSS-ROUTED:routed_mss", "HS-MSS-ROUTED.json", _default_mss_through_the_router,
         "confirmed", "the routed peer announces and gets the default MSS 536"),
    Flip("PMTU-SHRINK:pmtu_shrink", "PMTU-SHRINK.json", _no_shrink,
         "refuted", "the client keeps its full-size segments after the ICMP error"),
    Flip("PMTU-SHRINK:pmtu_shrink", "PMTU-SHRINK.json", _data_lost,
         "refuted", "the smaller segments do not get all the data through"),
]
