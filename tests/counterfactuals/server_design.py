"""Counterfactuals of cases/test_server_design.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import drop_segments, set_errno

PORT = 50000


def _thread_per_connection(rec):
    """The server runs a thread per connection (three threads: the loop and two workers)."""
    rec.facts["server process"]["threads"] = 3


def _second_client_starves(rec):
    """While A's connection is open, B gets no answer."""
    b_fd = max(c.args["fd"] for c in rec.calls_of("send", role="client"))
    for i, c in enumerate(rec.calls_of("recv", role="client")):
        if c.args["fd"] == b_fd:
            c.ret, c.errno = None, "EAGAIN"


def _bytes_swapped(rec):
    """Two accepted sockets read each other's client's bytes (demultiplexed by port only, say)."""
    reads = [c for c in rec.calls_of("recv", role="server") if c.ok and c.ret]
    reads[0].ret, reads[2].ret = reads[2].ret, reads[0].ret


def _stray_accepted(rec):
    """The segment that belongs to no session draws no RST."""
    drop_segments(rec, lambda s: s.src == "server" and s.dport == rec.facts["stray port"])


FLIPS = [
    Flip("ONE-PROCESS:process_per_connection", "ONE-PROCESS.json", _thread_per_connection,
         "confirmed", "the server needed a thread per connection"),
    Flip("ONE-PROCESS:process_per_connection", "ONE-PROCESS.json", _second_client_starves,
         "confirmed", "one thread cannot serve the second connection"),
    Flip("DEMUX-4TUPLE:sessions_by_address_and_port", "DEMUX-4TUPLE.json", _bytes_swapped,
         "refuted", "bytes of the client on one address reach the socket of the other address's client"),
    Flip("DEMUX-4TUPLE:sessions_by_address_and_port", "DEMUX-4TUPLE.json", _stray_accepted,
         "refuted", "a segment of no session is not refused"),
]
