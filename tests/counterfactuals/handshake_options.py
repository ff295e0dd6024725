"""Counterfactuals of cases/test_handshake_options.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import remove_option, set_info, set_option

PORT, TFO_PORT, SAME_PORT = 50000, 50001, 50100


def _timestamps_dropped_after_the_handshake(rec):
    """Both SYNs carry timestamps, yet no later segment does and ss shows no ts."""
    remove_option(rec, lambda s: "S" not in s.flags, "TS")
    set_info(rec, "ts", None)


def _timestamps_used_though_refused(rec):
    """The SYN+ACK carried no timestamps, yet the data carries them."""
    set_option(rec, lambda s: "S" not in s.flags and s.len > 0, "TS", [1, 2])


def _fixed_step(rec):
    """Client ISNs from a counter: 1000, 65000, 129000, ..."""
    for i, s in enumerate(rec.segments(PORT, src="client", flags="S")):
        if s.flags == "S":
            s.raw_seq = 1000 + 64000 * i


def _server_isn_zero(rec):
    next(s for s in rec.segments(PORT, src="server", flags="S.") if s.dport == SAME_PORT).raw_seq = 0


def _tfo(rec):
    """The Fast Open connection: the last one to TFO_PORT (the first only fetched the cookie)."""
    port = [x.sport for x in rec.segments(TFO_PORT, src="client") if x.flags == "S"][-1]
    return [s for s in rec.segments(TFO_PORT) if (s.sport if s.src == "client" else s.dport) == port]


def _tfo_syn_without_data(rec):
    """Fast Open on, but the SYN carries nothing (the cookie rejected): data after the handshake."""
    conn = _tfo(rec)
    syn = next(s for s in conn if s.flags == "S")
    syn.len = 0
    next(s for s in conn if s.flags == "S.").ack = 1


def _default_syn_with_data(rec):
    """Even the default connection's SYN carries the data."""
    syn = next(s for s in rec.segments(PORT, src="client") if s.flags == "S")
    syn.len = 5
    next(s for s in rec.segments(PORT, src="server") if s.flags == "S.").ack = 6


FLIPS = [
    Flip("HS-OPTIONS:options_negotiated", "HS-OPTIONS.json", _timestamps_dropped_after_the_handshake,
         "refuted", "timestamps agreed in both SYNs but not used afterwards"),
    Flip("HS-OPTIONS:options_negotiated", "HS-OPTIONS-server-no-timestamps.json", _timestamps_used_though_refused,
         "refuted", "timestamps used on data although the SYN+ACK refused them"),
    Flip("ISN-RANDOM:isn_arbitrary", "ISN-RANDOM.json", _fixed_step,
         "refuted", "the client's ISNs follow a fixed step"),
    Flip("ISN-RANDOM:isn_arbitrary", "ISN-RANDOM.json", _server_isn_zero,
         "refuted", "the server starts a connection at 0"),
    Flip("FASTOPEN:data_after_handshake", "FASTOPEN.json", _tfo_syn_without_data,
         "confirmed", "even with Fast Open on, the data waits for the handshake"),
    Flip("FASTOPEN:data_after_handshake", "FASTOPEN.json", _default_syn_with_data,
         "refuted", "data on the SYN by default"),
    Flip("FASTOPEN:syn_carries_no_data", "FASTOPEN.json", _tfo_syn_without_data,
         "confirmed", "no SYN carries data, Fast Open or not"),
    Flip("FASTOPEN:syn_carries_no_data", "FASTOPEN.json", _default_syn_with_data,
         "refuted", "the default SYN carries data"),
]
