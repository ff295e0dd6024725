"""Counterfactuals of cases/test_setup_faults.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import drop_segments, remove_rows, set_errno, set_history, set_states


def _never_syn_sent(rec, *phases):
    """The client sockets of these SYNSENT-NODROP phases never were in SYN_SENT (ss and trace)."""
    ports = rec.fact("ports")
    for phase in phases:
        port = ports[phase]
        for snap in rec.snapshots("client"):
            snap.rows = [r for r in snap.rows if r.local_port != port]
        for h in rec.transitions:
            if h.local_port == port:
                h.states, h.times = ["CLOSE"], []


def _synrcvd_then_established(rec):
    h = next(h for h in rec.transitions if h.local_role == "server" and "SYN_RECV" in h.states)
    i = h.states.index("SYN_RECV")
    h.states = h.states[:i + 1] + ["ESTABLISHED"] + h.states[i + 1:]
    h.times = h.times[:i] + [h.times[i]] + h.times[i:]


def _slow_answer(rec):
    """The client answers the retransmitted SYN+ACK a tenth of the held wait later (ack and after)."""
    synacks = [s for s in rec.segments_ if s.src == "server" and s.flags == "S."]
    late = (synacks[-1].t - synacks[0].t) / 10
    for s in rec.segments_:
        if s.t > synacks[-1].t:
            s.t += late


FLIPS = [
    Flip("CONN-SYNSENT-DROP:drops_keep_syn_sent", "CONN-SYNSENT-DROP.json",
         lambda r: set_states(r, "client", "while the SYNs are dropped", []),
         "refuted", "no SYN-SENT entry while the SYNs are dropped"),
    Flip("CONN-SYNSENT-DROP:dropped_syns_time_out", "CONN-SYNSENT-DROP.json",
         lambda r: (set_errno(r, "connect", "EHOSTUNREACH", role="client"),
                    set_history(r, "client", ["CLOSE", "SYN_SENT", "ESTABLISHED"], port=50000)),
         "refuted", "the attempt does not end in CLOSED by a timeout"),
    Flip("SYNSENT-NODROP:only_drops_leave_syn_sent", "SYNSENT-NODROP.json",
         lambda r: _never_syn_sent(r, "queue", "unused"),
         "confirmed", "a full listener and a missing neighbour fail the connect() at once: only the path's drops "
                      "leave SYN-SENT"),
    Flip("SYNSENT-TIMEOUT:timeout_to_closed", "SYNSENT-TIMEOUT.json",
         lambda r: set_errno(r, "connect", None, role="client", ret=0),
         "refuted", "connect() does not time out"),
    Flip("SYNRCVD-HOLD:held_ack_shows_syn_recv", "SYNRCVD-HOLD.json",
         lambda r: remove_rows(r, "SYN-RECV", role="server", label="the final ACK held"),
         "refuted", "ss shows no SYN-RECV even with the final ACK held"),
    Flip("SYNRCVD-HOLD:held_ack_shows_syn_recv", "SYNRCVD-HOLD.json", _slow_answer,
         "refuted", "un-held, the client's answer takes as long as a tenth of the held wait: SYN_RECEIVED is "
                    "long enough to see"),
    Flip("SYNRCVD-HOLD:syn_recv_waits_for_ack", "SYNRCVD-HOLD.json",
         lambda r: (drop_segments(r, lambda s: s.src == "server" and s.flags == "S."),
                    remove_rows(r, "SYN-RECV", role="server")),
         "refuted", "the server neither keeps nor retransmits anything while the ACK is held"),
    Flip("SIM-OPEN:simultaneous_open_path", "SIM-OPEN.json",
         lambda r: set_history(r, "server", ["CLOSE", "SYN_SENT", "ESTABLISHED"], port=50002),
         "refuted", "the server goes SYN_SENT -> ESTABLISHED without SYN_RECEIVED"),
    Flip("SIM-OPEN:simultaneous_open_is_special", "SIM-OPEN.json",
         lambda r: drop_segments(r, lambda s: s.src == "client" and s.flags == "S."),
         "refuted", "only one side sends a SYN+ACK: an ordinary three-way handshake"),
    Flip("SYNRCVD-CLOSE:closed_in_syn_recv", "SYNRCVD-CLOSE-simultaneous-open.json", _synrcvd_then_established,
         "refuted", "the closed socket passes ESTABLISHED before FIN_WAIT1"),
    Flip("SYNRCVD-CLOSE:closed_in_syn_recv", "SYNRCVD-CLOSE-fastopen.json",
         lambda r: drop_segments(r, lambda s: s.src == "server" and s.has("F")),
         "refuted", "the Fast Open child closed in SYN_RECV sends no FIN"),
]
